//! Profile data preparation throughput: SAIP decode and encode of one
//! package, personalization of one profile, its protection under a fresh
//! PPK as at binding, and bulk generation (values
//! from a CSPRNG, packages built on all cores) of 1,000 and 100,000
//! profiles of `profiles/smdpplus-usim.toml`.
//!
//! Run: `cargo bench --bench saip` (about a minute), or add `-- --quick`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::SeedableRng;
use smdpplus::ids::Iccid;
use smdpplus::profile::generate::{generate, params_iter, personalize_all};
use smdpplus::profile::params::Params;
use smdpplus::profile::protect::{Keyring, MasterKey, ProtectedPackage};
use smdpplus::profile::saip::ef::Imsi;
use smdpplus::profile::saip::Profile;
use smdpplus::profile::template::Template;
use std::path::Path;
use std::time::Duration;

fn template() -> Template {
    Template::load(Path::new("profiles/smdpplus-usim.toml")).expect("template")
}

fn one_profile(t: &Template) -> Params {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    Params::random(
        Iccid::with_check_digit("899990000000000000").expect("iccid"),
        Imsi::parse("001010000000000").expect("imsi"),
        t.spn(),
        &mut rng,
    )
}

fn codec(c: &mut Criterion) {
    let t = template();
    let upp = t.personalize(&one_profile(&t)).expect("personalize");
    let mut g = c.benchmark_group("saip");
    g.throughput(Throughput::Bytes(upp.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| Profile::decode(&upp).expect("decode"))
    });
    let p = Profile::decode(&upp).expect("decode");
    g.bench_function("encode", |b| b.iter(|| p.encode()));
    g.finish();
}

fn personalize(c: &mut Criterion) {
    let t = template();
    let params = one_profile(&t);
    let mut g = c.benchmark_group("personalize");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one", |b| {
        b.iter(|| t.personalize(&params).expect("personalize"))
    });
    g.finish();
}

/// The per-download work on a template-based profile besides
/// personalization: its segments encrypted and MACed under a fresh PPK
/// (SCP03t, SGP.22 §2.5.4) and the PPK wrapped under the master key.
fn bind(c: &mut Criterion) {
    let t = template();
    let params = one_profile(&t);
    let upp = t.personalize(&params).expect("personalize");
    let ring = Keyring::single(1, MasterKey::generate());
    let iccid = params.iccid.as_str().as_bytes().to_vec();
    let mut g = c.benchmark_group("bind");
    g.throughput(Throughput::Elements(1));
    g.bench_function("protect", |b| {
        b.iter(|| ProtectedPackage::protect(&ring, &upp, &iccid).expect("protect"))
    });
    g.bench_function("personalize_and_protect", |b| {
        b.iter(|| {
            let upp = t.personalize(&params).expect("personalize");
            ProtectedPackage::protect(&ring, &upp, &iccid).expect("protect")
        })
    });
    g.finish();
}

fn bulk(c: &mut Criterion) {
    let t = template();
    let mut g = c.benchmark_group("generate");
    g.sample_size(10);
    for count in [1_000u64, 100_000] {
        g.throughput(Throughput::Elements(count));
        if count > 10_000 {
            g.measurement_time(Duration::from_secs(30));
        }
        g.bench_function(format!("{count}"), |b| {
            let mut rng = rand::rngs::StdRng::from_entropy();
            b.iter(|| {
                generate(&t, count, "899990000000000000", "001010000000000", &mut rng)
                    .expect("generate")
            })
        });
    }
    // The two halves of 1,000: drawing the values, building the packages.
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("values_1000", |b| {
        let mut rng = rand::rngs::StdRng::from_entropy();
        b.iter(|| {
            params_iter(&t, 1_000, "899990000000000000", "001010000000000", &mut rng)
                .expect("range")
                .count()
        })
    });
    g.bench_function("packages_1000", |b| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let params: Vec<Params> =
            params_iter(&t, 1_000, "899990000000000000", "001010000000000", &mut rng)
                .expect("range")
                .collect();
        b.iter_batched(
            || params.clone(),
            |p| personalize_all(&t, p).expect("personalize"),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, codec, personalize, bind, bulk);
criterion_main!(benches);
