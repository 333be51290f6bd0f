//! The DKG property over many seeds, in the deterministic simulator: with n nodes, threshold t,
//! at most f byzantine nodes (n ≥ 3f + 1) and random loss, duplication, delay, partitions that
//! heal and crashes with restart, every honest node ends with the same QUAL and key (or fails an
//! attempt, names culprits and a retry succeeds) — never a split, never a key that t honest
//! nodes cannot serve. A failing seed is printed and replays exactly.

use kms_simnet::sim::{random_scenario, Behaviour, Scenario};

const SEEDS: u64 = 500;

#[test]
fn property_holds_over_500_random_seeds() {
    let mut retried = 0;
    for seed in 0..SEEDS {
        let out = random_scenario(seed).run::<kms_dkg::Ed25519>(seed);
        assert!(
            out.violation.is_none(),
            "seed {seed} violates the property: {:?}\nscenario: {:?}\nreplay: cargo run -p kms-simnet -- sim --seed {seed}",
            out.violation,
            out.scenario
        );
        retried += out.failures.len();
    }
    eprintln!("{SEEDS} seeds: property holds, {retried} failed attempts retried");
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17, 59] {
        let a = random_scenario(seed).run::<kms_dkg::Ed25519>(seed);
        let b = random_scenario(seed).run::<kms_dkg::Ed25519>(seed);
        assert_eq!(a.completed, b.completed);
        assert_eq!(a.failures, b.failures);
        assert_eq!((a.virtual_ms, a.delivered), (b.virtual_ms, b.delivered));
    }
}

#[test]
fn each_byzantine_behaviour_is_survived_and_named() {
    for b in Behaviour::ALL {
        let out = Scenario::new(7, 4).byzantine(3, b).drop(0.02).run::<kms_dkg::Bls12381G2>(11);
        assert!(out.violation.is_none(), "{b:?}: {:?}", out.violation);
        assert_eq!(out.completed.len(), 6, "{b:?}: every honest node holds a share");
        let named = out.culprits.get(&3).cloned().unwrap_or_default();
        match b {
            Behaviour::Silent => assert!(named.contains("MissingDeal"), "{named:?}"),
            Behaviour::BadShare => {
                assert!(named.iter().any(|f| f.starts_with("UnansweredComplaint")), "{named:?}")
            }
            Behaviour::BadProof => assert!(named.contains("InvalidProof"), "{named:?}"),
            Behaviour::Equivocate => assert!(named.contains("EquivocatedDeal"), "{named:?}"),
            Behaviour::FalseComplaint => {
                assert!(named.iter().any(|f| f.starts_with("FalseComplaint")), "{named:?}")
            }
            // Garbage never decodes (the node looks silent); a bad confirmation is outvoted.
            Behaviour::Garbage => assert!(named.contains("MissingDeal"), "{named:?}"),
            Behaviour::BadConfirm => {}
        }
    }
}

#[test]
fn partitions_heal_and_crashed_nodes_rejoin() {
    // A node cut off for the whole ceremony adopts the transcript the others signed.
    let out = Scenario::new(5, 3).partition(0, 20_000, &[5]).run::<kms_dkg::Ed25519>(5);
    assert!(out.violation.is_none(), "{:?}", out.violation);
    assert_eq!(out.completed.len(), 5);
    // A node that crashes right after dealing and comes back after the others finished rebuilds
    // its share from its persisted deal and logged messages.
    let out = Scenario::new(5, 3).crash(2, 50, Some(30_000)).run::<kms_dkg::Ed25519>(6);
    assert!(out.violation.is_none(), "{:?}", out.violation);
    assert_eq!(out.completed.len(), 5);
    assert!(out.completed.values().all(|(epoch, _, qual)| *epoch == 1 && qual.contains(&2)));
}

#[test]
#[ignore]
fn debug_seed() {
    let seed: u64 = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(845);
    let sc = random_scenario(seed);
    eprintln!("{sc:?}");
    let out = sc.run::<kms_dkg::Ed25519>(seed);
    eprintln!("{:?}", out.violation);
}

/// Known limit (documented in the issue notes): a node partitioned across the response round
/// cannot get its complaint heard in time; if the dealer it complains about is byzantine and
/// withholds the justification, the others qualify that dealer and the partitioned node can never
/// rebuild its share of their transcript. Safety holds and t honest nodes still serve the key;
/// giving the node a share needs share recovery (not built).
#[test]
fn known_limit_late_complaint_against_a_withholding_dealer() {
    let out = random_scenario(1411).run::<kms_dkg::Ed25519>(1411);
    assert_eq!(out.violation, Some(kms_simnet::sim::Violation::NotFinished { nodes: vec![1] }));
    let transcripts: std::collections::BTreeSet<_> = out.completed.values().map(|(_, t, _)| *t).collect();
    assert_eq!(transcripts.len(), 1, "no split");
    assert!(out.completed.len() >= usize::from(out.scenario.t), "the key is still served by t honest nodes");
}
