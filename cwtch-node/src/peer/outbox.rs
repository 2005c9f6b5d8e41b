//! The outgoing queue in memory (the profile holds the same records): items
//! for contacts, kept until the contact acknowledges them, and posts for
//! servers, kept until the server acknowledges them durably.

use std::collections::BTreeMap;

use crate::model::OutItem;
use crate::store::records::GroupPost;

/// The outbox room.
#[derive(Default)]
pub struct Outbox {
    /// Items for contacts, by (contact, id).
    items: BTreeMap<(String, u64), OutItem>,
    /// Posts for servers, by (server, owner, seq).
    posts: BTreeMap<(String, String, u64), GroupPost>,
}

impl Outbox {
    /// The queue as loaded.
    pub fn new(items: Vec<OutItem>, posts: Vec<GroupPost>) -> Self {
        Outbox {
            items: items
                .into_iter()
                .map(|i| ((i.contact.clone(), i.id), i))
                .collect(),
            posts: posts
                .into_iter()
                .map(|p| ((p.server.clone(), p.group.clone(), p.group_seq), p))
                .collect(),
        }
    }

    /// Queues an item for a contact.
    pub fn push(&mut self, item: OutItem) {
        self.items.insert((item.contact.clone(), item.id), item);
    }

    /// The contact acknowledged item `id`: it leaves the queue.
    pub fn acked(&mut self, contact: &str, id: u64) -> Option<OutItem> {
        self.items.remove(&(contact.to_string(), id))
    }

    /// A contact's items, in the order they were written.
    pub fn for_contact(&self, contact: &str) -> Vec<&OutItem> {
        let mut v: Vec<&OutItem> = self
            .items
            .range((contact.to_string(), 0)..=(contact.to_string(), u64::MAX))
            .map(|(_, i)| i)
            .collect();
        v.sort_by_key(|i| i.seq);
        v
    }

    /// How many items wait for `contact`.
    pub fn pending_for(&self, contact: &str) -> u64 {
        self.items
            .range((contact.to_string(), 0)..=(contact.to_string(), u64::MAX))
            .count() as u64
    }

    /// Whether anything waits for `contact`.
    pub fn has_items_for(&self, contact: &str) -> bool {
        self.pending_for(contact) > 0
    }

    /// Drops every item for `contact` (it was refused or forgotten).
    pub fn drop_contact(&mut self, contact: &str) -> Vec<OutItem> {
        let keys: Vec<(String, u64)> = self
            .items
            .range((contact.to_string(), 0)..=(contact.to_string(), u64::MAX))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.items.remove(&k))
            .collect()
    }

    /// How many items wait in all.
    pub fn len(&self) -> usize {
        self.items.len() + self.posts.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a post for a server.
    pub fn push_post(&mut self, post: GroupPost) {
        self.posts.insert(
            (post.server.clone(), post.group.clone(), post.group_seq),
            post,
        );
    }

    /// The server stored a post: it leaves the queue.
    pub fn post_done(&mut self, server: &str, owner: &str, seq: u64) -> Option<GroupPost> {
        self.posts
            .remove(&(server.to_string(), owner.to_string(), seq))
    }

    /// The posts waiting for `server`, oldest sequence number first.
    pub fn posts_for(&self, server: &str) -> Vec<&GroupPost> {
        let mut v: Vec<&GroupPost> = self
            .posts
            .iter()
            .filter(|((s, _, _), _)| s == server)
            .map(|(_, p)| p)
            .collect();
        v.sort_by_key(|p| p.group_seq);
        v
    }

    /// The posts of `owner` (a group id or `mailbox:<address>`) that wait
    /// for any server.
    pub fn posts_of(&self, owner: &str) -> impl Iterator<Item = &GroupPost> {
        self.posts.values().filter(move |p| p.group == owner)
    }

    /// Every post waiting.
    pub fn posts_of_any(&self) -> impl Iterator<Item = &GroupPost> {
        self.posts.values()
    }

    /// Whether a post of `owner` with `seq` waits for any server.
    pub fn post_pending(&self, owner: &str, seq: u64) -> bool {
        self.posts
            .values()
            .any(|p| p.group == owner && p.group_seq == seq)
    }

    /// Drops the posts waiting for `server`, except those `keep` says to
    /// keep; returns the keys dropped (server, owner, seq).
    pub fn drop_posts_for(
        &mut self,
        server: &str,
        keep: impl Fn(&GroupPost) -> bool,
    ) -> Vec<(String, String, u64)> {
        let gone: Vec<(String, String, u64)> = self
            .posts
            .iter()
            .filter(|((s, _, _), p)| s == server && !keep(p))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.posts.remove(k);
        }
        gone
    }

    /// Drops every post of `owner` (a group we leave).
    pub fn drop_posts_of(&mut self, owner: &str) -> Vec<(String, String, u64)> {
        let gone: Vec<(String, String, u64)> = self
            .posts
            .keys()
            .filter(|(_, o, _)| o == owner)
            .cloned()
            .collect();
        for k in &gone {
            self.posts.remove(k);
        }
        gone
    }

    /// Whether any post waits for `server` from an owner that starts with
    /// `prefix` (a first-contact request to someone's mailbox).
    pub fn has_posts_for_with(&self, server: &str, prefix: &str) -> bool {
        self.posts
            .keys()
            .any(|(s, o, _)| s == server && o.starts_with(prefix))
    }
}
