use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use core::hint::black_box;
use criterion::{Criterion, criterion_group, criterion_main};
use subtle::ConstantTimeEq;

fn bench(c: &mut Criterion) {
    let key = [7u8; 32];
    let blob = [0x5au8; 2048];
    let aead = XChaCha20Poly1305::new(&key.into());
    c.bench_function("failed_open", |b| {
        b.iter(|| {
            let mut buf = [0u8; 2048 - 40];
            buf.copy_from_slice(&blob[40..]);
            let nonce: [u8; 24] = blob[..24].try_into().unwrap();
            let tag: [u8; 16] = blob[24..40].try_into().unwrap();
            black_box(
                aead.decrypt_inout_detached(&nonce.into(), &[], (&mut buf[..]).into(), &tag.into())
                    .is_err(),
            )
        })
    });
    c.bench_function("chacha20_block", |b| {
        b.iter(|| {
            let nonce: [u8; 12] = black_box(&blob)[..12].try_into().unwrap();
            let mut c = chacha20::ChaCha20::new(&key.into(), &nonce.into());
            let mut t = [0u8; 16];
            c.apply_keystream(&mut t);
            black_box(bool::from(t.ct_eq(&blob[24..40])))
        })
    });
    c.bench_function("chacha8_block", |b| {
        b.iter(|| {
            let nonce: [u8; 12] = black_box(&blob)[..12].try_into().unwrap();
            let mut c = chacha20::ChaCha8::new(&key.into(), &nonce.into());
            let mut t = [0u8; 16];
            c.apply_keystream(&mut t);
            black_box(bool::from(t.ct_eq(&blob[24..40])))
        })
    });
    c.bench_function("hchacha20", |b| {
        b.iter(|| {
            let inp: [u8; 16] = black_box(&blob)[..16].try_into().unwrap();
            let t = chacha20::hchacha::<chacha20::R20>(&key.into(), &inp.into());
            black_box(bool::from(t[..16].ct_eq(&blob[24..40])))
        })
    });
    c.bench_function("hchacha12", |b| {
        b.iter(|| {
            let inp: [u8; 16] = black_box(&blob)[..16].try_into().unwrap();
            let t = chacha20::hchacha::<chacha20::R12>(&key.into(), &inp.into());
            black_box(bool::from(t[..16].ct_eq(&blob[24..40])))
        })
    });
    use sha2::Digest;
    let mut pre = sha2::Sha256::new();
    pre.update([1u8; 64]);
    c.bench_function("sha256_prefix", |b| {
        b.iter(|| {
            let mut h = pre.clone();
            h.update(&black_box(&blob)[..24]);
            let t = h.finalize();
            black_box(bool::from(t[..16].ct_eq(&blob[24..40])))
        })
    });
}
criterion_group!(benches, bench);
criterion_main!(benches);
