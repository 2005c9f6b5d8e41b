//! Draws the state of `chat` ([`App`]): a header, the contacts-and-groups
//! pane, the conversation, the input line and a line of notices. Pure: the
//! same state draws the same screen (tests use ratatui's TestBackend).
//! Every text another party chose is made safe first (no control
//! characters reach the terminal).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use unicode_width::UnicodeWidthStr;

use super::app::{App, Conv, Level, Overlay, conn_word, help_lines, short};
use crate::cli::format::safe;
use crate::model::{Delivery, StoredMessage};

/// The colour of a connection state.
pub fn conn_color(state: &str) -> Color {
    match state {
        "authenticated" | "synced" => Color::Green,
        "connected" | "connecting" => Color::Yellow,
        "failed" => Color::Red,
        _ => Color::DarkGray,
    }
}

fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}

/// The screen's parts: header, list, conversation, input, status.
fn areas(app: &App, area: Rect) -> [Rect; 5] {
    let input_lines = app.editor.text.split('\n').count().clamp(1, 5) as u16;
    let [header, body, input, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(input_lines + 2),
        Constraint::Length(1),
    ])
    .areas(area);
    let left_w = (area.width / 3).clamp(22, 34);
    let [left, right] =
        Layout::horizontal([Constraint::Length(left_w), Constraint::Min(10)]).areas(body);
    [header, left, right, input, status]
}

/// The inside of the conversation pane on a screen of `app.size`.
fn conversation_inner(app: &App) -> Rect {
    let [_, _, right, _, _] = areas(app, Rect::new(0, 0, app.size.0, app.size.1));
    Block::default().borders(Borders::ALL).inner(right)
}

/// The lines of an overlay (help, servers), wrapped to `width`.
fn overlay_lines(overlay: &Overlay, width: usize) -> Vec<Line<'static>> {
    let raw: Vec<String> = match overlay {
        Overlay::Help => help_lines().map(str::to_string).collect(),
        Overlay::Servers(list) => list.clone(),
    };
    raw.iter()
        .flat_map(|l| wrap(&[(l.clone(), Style::default())], width, 0))
        .collect()
}

/// Where an overlay's text goes inside the conversation pane (under its
/// title line).
fn overlay_area(inner: Rect) -> Rect {
    Block::default().borders(Borders::TOP).inner(inner)
}

/// How far the overlay in view can scroll down (on a screen of `app.size`):
/// its last line at the bottom.
pub fn overlay_max_scroll(app: &App) -> usize {
    let Some(overlay) = &app.overlay else {
        return 0;
    };
    let area = overlay_area(conversation_inner(app));
    let lines = overlay_lines(overlay, usize::from(area.width));
    lines.len().saturating_sub(usize::from(area.height))
}

/// How far the conversation in view can scroll back (on a screen of
/// `app.size`): its first line at the top.
pub fn conversation_max_scroll(app: &App) -> usize {
    let Some(conv) = &app.selected else {
        return 0;
    };
    let inner = conversation_inner(app);
    let (_, rest) = conversation_parts(app, conv, inner);
    let lines = message_lines(app, conv, usize::from(inner.width));
    lines.len().saturating_sub(usize::from(rest.height))
}

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let [header, left, right, input, status] = areas(app, frame.area());
    render_header(app, frame, header);
    render_list(app, frame, left);
    render_conversation(app, frame, right);
    render_input(app, frame, input);
    render_status(app, frame, status);
}

fn render_header(app: &App, frame: &mut Frame, area: Rect) {
    // Our address, whole, to give to someone (an 80-column screen has
    // room for it and the name, not for the program's name too).
    let mut spans = Vec::new();
    if area.width >= 90 {
        spans.push(Span::styled(
            " cwtch ·",
            Style::default().add_modifier(Modifier::BOLD),
        ));
    }
    spans.push(Span::styled(
        format!(" {} · ", safe(&app.name)),
        Style::default().add_modifier(Modifier::BOLD),
    ));
    spans.push(Span::styled(app.address.clone(), dim()));
    if app.transport_note.is_some() {
        let note = if area.width >= 100 {
            " · NO TOR (dev transport)"
        } else {
            " · NO TOR"
        };
        spans.push(Span::styled(note, Style::default().fg(Color::Red)));
    }
    if !app.connected {
        spans = vec![Span::styled(
            match app.disconnected_why.as_deref() {
                Some(why) => format!(
                    " cwtch · the daemon does not answer ({}); retrying",
                    safe(why)
                ),
                None => " cwtch · connecting to the daemon".to_string(),
            },
            Style::default().fg(Color::Red),
        )];
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Cuts `s` to at most `width` columns.
fn fit(s: &str, width: usize) -> String {
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if w + cw > width {
            if let Some(last) = out.pop() {
                let lw = unicode_width::UnicodeWidthChar::width(last).unwrap_or(0);
                w -= lw;
                if w < width {
                    out.push('…');
                }
            }
            return out;
        }
        w += cw;
        out.push(c);
    }
    out
}

/// One item of the left pane: its label, a mark kept after it however it
/// is cut (`?`: a name they announce, unverified), its unread count, and a
/// word on the right with its colour.
fn entry(app: &App, conv: &Conv) -> (String, &'static str, u64, String, Color) {
    match conv {
        Conv::Contact(a) => {
            let Some(c) = app.contact(a) else {
                return (short(a), "", 0, String::new(), Color::Reset);
            };
            let (word, color) = match c.state.as_str() {
                "request" => ("request".to_string(), Color::Yellow),
                "blocked" => ("blocked".to_string(), Color::Red),
                _ => (conn_word(&c.conn).to_string(), conn_color(&c.conn)),
            };
            let (name, ours) = c.shown();
            (name, if ours { "" } else { "?" }, c.unread, word, color)
        }
        Conv::Group(id) => {
            let Some(g) = app.group(id) else {
                return (short(id), "", 0, String::new(), Color::Reset);
            };
            let state = g.conn();
            (
                format!("#{}", safe(&g.name)),
                "",
                g.unread,
                conn_word(state).to_string(),
                conn_color(state),
            )
        }
        Conv::Invite(id) => {
            let name = app.invite(id).map(|i| safe(&i.name)).unwrap_or_default();
            (format!("#{name}"), "", 0, "invite".into(), Color::Yellow)
        }
    }
}

fn render_list(app: &App, frame: &mut Frame, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" contacts & groups ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let entries = app.entries();
    let width = usize::from(inner.width);
    let mut lines = Vec::new();
    if entries.is_empty() {
        lines.push(Line::styled("nobody yet:", dim()));
        lines.push(Line::styled("/add ADDRESS", dim()));
    }
    let selected_at = app
        .selected
        .as_ref()
        .and_then(|s| entries.iter().position(|e| e == s))
        .unwrap_or(0);
    let height = usize::from(inner.height);
    let first = selected_at.saturating_sub(height.saturating_sub(1));
    for conv in entries.iter().skip(first).take(height) {
        let (label, mark, unread, word, color) = entry(app, conv);
        let count = if unread > 0 {
            format!(" {unread}")
        } else {
            String::new()
        };
        let right = format!("{count} {word}");
        let room = width.saturating_sub(right.width() + 1);
        // The mark stays: the name is cut one column shorter for it.
        let label = fit(&label, room.saturating_sub(mark.width())) + mark;
        let pad = width.saturating_sub(label.width() + right.width() + 1);
        let selected = app.selected.as_ref() == Some(conv);
        let base = if selected {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        };
        let marker = if selected { ">" } else { " " };
        let mut spans = vec![
            Span::styled(format!("{marker}{label}{}", " ".repeat(pad)), base),
            Span::styled(count, base.fg(Color::Cyan).add_modifier(Modifier::BOLD)),
            Span::styled(format!(" {word}"), base.fg(color)),
        ];
        if unread > 0 {
            spans[0].style = spans[0].style.add_modifier(Modifier::BOLD);
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The lines above the messages: who this is, how they are reached, what
/// waits for an answer.
fn conversation_header(app: &App, conv: &Conv) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    match conv {
        Conv::Contact(a) => {
            let Some(c) = app.contact(a) else {
                return out;
            };
            let (name, ours) = c.shown();
            let who = if ours {
                name.clone()
            } else {
                format!("{name}? (the name they announce, unverified: /nick NAME sets yours)")
            };
            out.push(Line::styled(format!("{who} · {}", short(a)), dim()));
            match c.state.as_str() {
                "request" => out.push(Line::styled(
                    format!(
                        "{} asks to be your contact: /accept or /refuse (/block: never again)",
                        c.label()
                    ),
                    Style::default()
                        .fg(Color::Yellow)
                        .add_modifier(Modifier::BOLD),
                )),
                "blocked" => out.push(Line::styled(
                    "blocked: refused at the handshake (/unblock)",
                    Style::default().fg(Color::Red),
                )),
                _ => {
                    let mut spans = vec![Span::styled(
                        conn_word(&c.conn).to_string(),
                        Style::default().fg(conn_color(&c.conn)),
                    )];
                    if c.conn != "authenticated"
                        && let Some(e) = &c.last_error
                    {
                        spans.push(Span::styled(format!(" (last: {})", safe(e)), dim()));
                    }
                    if c.pending > 0 {
                        spans.push(Span::styled(
                            format!(" · {} waiting to be delivered", c.pending),
                            Style::default().fg(Color::Yellow),
                        ));
                    }
                    out.push(Line::from(spans));
                }
            }
        }
        Conv::Group(id) => {
            let Some(g) = app.group(id) else {
                return out;
            };
            let mut spans = vec![Span::styled("server ", dim())];
            for (i, s) in g.servers.iter().enumerate() {
                if i > 0 {
                    spans.push(Span::raw(", "));
                }
                spans.push(Span::styled(short(&s.address), dim()));
                spans.push(Span::styled(
                    format!(" {}", conn_word(&s.conn)),
                    Style::default().fg(conn_color(&s.conn)),
                ));
                if s.conn == "failed"
                    && let Some(e) = &s.last_error
                {
                    spans.push(Span::styled(format!(" ({})", safe(e)), dim()));
                }
            }
            out.push(Line::from(spans));
            if !g.previous.is_empty() {
                let old: Vec<String> = g.previous.iter().map(|s| short(s)).collect();
                out.push(Line::styled(
                    format!(
                        "moved away from {} (still read for a while)",
                        old.join(", ")
                    ),
                    dim(),
                ));
            }
            if let Some(gap) = g.gaps.last() {
                out.push(Line::styled(
                    format!("latest gap report: {}", safe(gap)),
                    Style::default().fg(Color::Yellow),
                ));
            }
        }
        Conv::Invite(id) => {
            if let Some(i) = app.invite(id) {
                let servers: Vec<String> = i.servers.iter().map(|s| short(s)).collect();
                out.push(Line::styled(
                    format!(
                        "{} invites you to the group #{} (server {}).",
                        app.name_of(&i.from),
                        safe(&i.name),
                        servers.join(", ")
                    ),
                    Style::default().fg(Color::Yellow),
                ));
                out.push(Line::styled(
                    "/accept to join (you will read its earlier posts), or /refuse",
                    Style::default()
                        .fg(Color::Yellow)
                        .add_modifier(Modifier::BOLD),
                ));
            }
        }
    }
    out
}

/// Word-wraps styled pieces to `width` columns; lines after the first
/// start with `indent` spaces. A `\n` in a piece starts a new line.
pub fn wrap(pieces: &[(String, Style)], width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(indent + 8);
    let mut lines: Vec<Line<'static>> = Vec::new();
    let mut current: Vec<Span<'static>> = Vec::new();
    let mut used = 0usize;
    let mut push_line = |current: &mut Vec<Span<'static>>, used: &mut usize| {
        lines.push(Line::from(std::mem::take(current)));
        current.push(Span::raw(" ".repeat(indent)));
        *used = indent;
    };
    for (text, style) in pieces {
        for (n, part) in text.split('\n').enumerate() {
            if n > 0 {
                push_line(&mut current, &mut used);
            }
            // Words with the spaces that follow them.
            let mut rest = part;
            while !rest.is_empty() {
                let end = rest
                    .char_indices()
                    .find(|&(i, c)| c == ' ' && i > 0 && !rest[..i].ends_with(' '))
                    .map(|(i, _)| i)
                    .unwrap_or(rest.len());
                let end = rest[end..]
                    .char_indices()
                    .find(|&(_, c)| c != ' ')
                    .map_or(rest.len(), |(i, _)| end + i);
                let word = &rest[..end];
                rest = &rest[end..];
                let w = word.width();
                if used + word.trim_end().width() > width && used > indent {
                    push_line(&mut current, &mut used);
                }
                if used + w <= width {
                    current.push(Span::styled(word.to_string(), *style));
                    used += w;
                    continue;
                }
                // Longer than a line: cut it.
                let mut piece = String::new();
                for c in word.chars() {
                    let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
                    if used + cw > width {
                        current.push(Span::styled(std::mem::take(&mut piece), *style));
                        push_line(&mut current, &mut used);
                    }
                    piece.push(c);
                    used += cw;
                }
                current.push(Span::styled(piece, *style));
            }
        }
    }
    lines.push(Line::from(current));
    lines
}

fn status_piece(m: &StoredMessage) -> Option<(String, Style)> {
    let (word, color) = match m.status {
        Delivery::Received => return None,
        Delivery::Pending => ("pending", Color::Yellow),
        Delivery::Delivered => ("delivered", Color::Green),
        Delivery::Missing => ("missing", Color::Red),
        Delivery::Recovered => ("recovered", Color::Cyan),
    };
    let text = match &m.note {
        Some(note) => format!("  [{word}: {}]", safe(note)),
        None => format!("  [{word}]"),
    };
    Some((text, Style::default().fg(color)))
}

/// Makes a text safe for the terminal, keeping its new lines.
fn safe_lines(text: &str) -> String {
    text.split('\n').map(safe).collect::<Vec<_>>().join("\n")
}

/// The lines of a conversation's messages and notices, wrapped to `width`.
pub fn message_lines(app: &App, conv: &Conv, width: usize) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let empty = Vec::new();
    let list = app.messages.get(conv).unwrap_or(&empty);
    let notices = app.notices.get(conv).map(Vec::as_slice).unwrap_or(&[]);
    let mut day = None;
    let mut n = 0;
    for m in list {
        while let Some(notice) = notices.get(n).filter(|x| x.after_seq < m.seq) {
            out.extend(notice_lines(&notice.text, width));
            n += 1;
        }
        let when = jiff::Timestamp::from_millisecond(m.sent_at as i64)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned_datetime(app.tz.clone());
        let date = when.date();
        if day != Some(date) {
            day = Some(date);
            out.push(Line::styled(
                format!(
                    "── {:04}-{:02}-{:02} ──",
                    date.year(),
                    date.month(),
                    date.day()
                ),
                dim(),
            ));
        }
        let time = format!("{:02}:{:02} ", when.hour(), when.minute());
        let (author, color) = if m.outgoing {
            ("me".to_string(), Color::Blue)
        } else if m.status == Delivery::Missing {
            (app.name_of(&m.author), Color::Red)
        } else {
            (app.name_of(&m.author), Color::Magenta)
        };
        let text = if m.status == Delivery::Missing && m.text.is_empty() {
            "(a message that has not arrived yet)".to_string()
        } else {
            safe_lines(&m.text)
        };
        let mut pieces = vec![
            (time, dim()),
            (
                format!("{author}: "),
                Style::default().fg(color).add_modifier(Modifier::BOLD),
            ),
            (text, Style::default()),
        ];
        pieces.extend(status_piece(m));
        out.extend(wrap(&pieces, width, 6));
    }
    for notice in &notices[n.min(notices.len())..] {
        out.extend(notice_lines(&notice.text, width));
    }
    out
}

fn notice_lines(text: &str, width: usize) -> Vec<Line<'static>> {
    wrap(
        &[(
            format!("-- {text} --"),
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::ITALIC),
        )],
        width,
        3,
    )
}

fn render_conversation(app: &App, frame: &mut Frame, area: Rect) {
    let title = match &app.selected {
        Some(conv) => format!(" {} ", app.title_of(conv)),
        None => " conversation ".to_string(),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if let Some(overlay) = &app.overlay {
        let text_area = overlay_area(inner);
        let lines = overlay_lines(overlay, usize::from(text_area.width));
        let height = usize::from(text_area.height);
        let max = lines.len().saturating_sub(height);
        let scroll = app.overlay_scroll.min(max);
        let what = match overlay {
            Overlay::Help => "help",
            Overlay::Servers(_) => "servers, best first",
        };
        let more = if max > 0 { " · PgUp/PgDn scroll" } else { "" };
        let title = format!(" {what} (Esc closes{more}) ");
        frame.render_widget(Clear, inner);
        let block = Block::default().borders(Borders::TOP).title(title);
        frame.render_widget(block, inner);
        let mut shown: Vec<Line> = lines.into_iter().skip(scroll).take(height).collect();
        if scroll < max
            && let Some(last) = shown.last_mut()
        {
            *last = Line::styled(
                format!("▼ {} more line(s): PgDn", max - scroll),
                Style::default().fg(Color::Cyan),
            );
        }
        frame.render_widget(Paragraph::new(shown), text_area);
        return;
    }
    let Some(conv) = &app.selected else {
        let hello = vec![
            Line::raw("Welcome. Add a contact with"),
            Line::raw("  /add ADDRESS first message"),
            Line::raw("and give them your address (at the top). /help lists everything."),
        ];
        frame.render_widget(
            Paragraph::new(hello).wrap(ratatui::widgets::Wrap { trim: false }),
            inner,
        );
        return;
    };
    let width = usize::from(inner.width);
    let (header, rest) = conversation_parts(app, conv, inner);
    let top = Rect {
        height: header.len() as u16,
        ..inner
    };
    frame.render_widget(Paragraph::new(header), top);
    let lines = message_lines(app, conv, width);
    let height = usize::from(rest.height);
    let scroll = app.scroll.min(lines.len().saturating_sub(height));
    let end = lines.len() - scroll;
    let start = end.saturating_sub(height);
    let mut shown: Vec<Line> = lines[start..end].to_vec();
    if scroll > 0
        && let Some(last) = shown.last_mut()
    {
        *last = Line::styled(
            format!("▼ {scroll} more line(s) below: PgDn"),
            Style::default().fg(Color::Cyan),
        );
    }
    if lines.is_empty() && matches!(conv, Conv::Contact(_) | Conv::Group(_)) {
        shown.push(Line::styled("no messages yet", dim()));
    }
    // Short conversations sit at the bottom, next to the input line.
    let pad = height.saturating_sub(shown.len()) as u16;
    let [_, bottom] = Layout::vertical([Constraint::Length(pad), Constraint::Min(0)]).areas(rest);
    frame.render_widget(Paragraph::new(shown), bottom);
}

/// The conversation's header lines (at most half of `inner`) and the
/// area under them, for the messages.
fn conversation_parts(app: &App, conv: &Conv, inner: Rect) -> (Vec<Line<'static>>, Rect) {
    let width = usize::from(inner.width);
    let mut header = Vec::new();
    for line in conversation_header(app, conv) {
        header.extend(wrap_line(line, width));
    }
    header.truncate(usize::from(inner.height / 2));
    let header_h = header.len() as u16;
    let [_, rest] =
        Layout::vertical([Constraint::Length(header_h), Constraint::Min(0)]).areas(inner);
    (header, rest)
}

fn wrap_line(line: Line<'static>, width: usize) -> Vec<Line<'static>> {
    let pieces: Vec<(String, Style)> = line
        .spans
        .iter()
        .map(|s| (s.content.to_string(), line.style.patch(s.style)))
        .collect();
    wrap(&pieces, width, 2)
}

fn render_input(app: &App, frame: &mut Frame, area: Rect) {
    // What Enter does here.
    let title = match &app.selected {
        Some(Conv::Contact(a)) => match app.contact(a).map(|c| c.state.as_str()) {
            Some("request") => " a contact request: /accept or /refuse ".to_string(),
            Some("blocked") => " blocked: /unblock, or a command ".to_string(),
            _ => format!(
                " to {} · Enter sends · Alt+Enter: new line ",
                app.title_of(&Conv::Contact(a.clone()))
            ),
        },
        Some(conv @ Conv::Group(_)) => format!(
            " to {} · Enter sends · Alt+Enter: new line ",
            app.title_of(conv)
        ),
        Some(Conv::Invite(_)) => " a group invite: /accept or /refuse ".to_string(),
        None => " a command (/help lists them) · Enter runs it ".to_string(),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (line, _) = app.editor.cursor_line_col();
    let rows = usize::from(inner.height).max(1);
    let first = line.saturating_sub(rows - 1);
    let width = usize::from(inner.width).max(1);
    // The characters of the cursor's line scrolled out on the left, so
    // that what is before the cursor fits (in columns: wide characters
    // take two).
    let line_start = app.editor.text[..app.editor.cursor]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let widths: Vec<usize> = app.editor.text[line_start..app.editor.cursor]
        .chars()
        .map(|c| safe(c.encode_utf8(&mut [0u8; 4])).width())
        .collect();
    let mut before_w: usize = widths.iter().sum();
    let mut skip = 0;
    while before_w > width - 1 && skip < widths.len() {
        before_w -= widths[skip];
        skip += 1;
    }
    let lines: Vec<Line> = app
        .editor
        .text
        .split('\n')
        .skip(first)
        .take(rows)
        .enumerate()
        .map(|(i, l)| {
            let skip = if first + i == line { skip } else { 0 };
            Line::raw(safe(&l.chars().skip(skip).collect::<String>()))
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
    let x = inner.x + (before_w as u16).min(inner.width.saturating_sub(1));
    let y = inner.y + (line - first) as u16;
    frame.set_cursor_position((x, y));
}

fn render_status(app: &App, frame: &mut Frame, area: Rect) {
    let line = match &app.status {
        Some((text, level)) => {
            let color = match level {
                Level::Info => Color::Cyan,
                Level::Ok => Color::Green,
                Level::Error => Color::Red,
            };
            Line::styled(format!(" {text}"), Style::default().fg(color))
        }
        None => Line::styled(
            " Up/Down: choose · PgUp/PgDn: scroll · /help · Ctrl+C: quit",
            dim(),
        ),
    };
    frame.render_widget(Paragraph::new(line), area);
}
