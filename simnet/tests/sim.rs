//! The ceremony property over many seeds, in the deterministic simulator, which runs the node's
//! own ceremony engine for both suites: with n nodes, threshold t,
//! at most f byzantine nodes (n ≥ 3f + 1) and random loss, duplication, delay, partitions that
//! heal, crashes with restart and late complaints (where t ≤ n − f − 1), every honest node ends
//! with the same QUAL and key (or fails an attempt, names culprits and a retry succeeds; or, its
//! complaint unheard, recovers its share) — never a split, never a node that signs two
//! transcripts in one attempt (crashes are also injected at every persist point, where t plus
//! the byzantine nodes stay below n, see `add_faults`), t honest shares always interpolate to the
//! secret of the public key, never a key that t honest nodes cannot serve, and no honest node is
//! ever named for a fault that needs its own signature. A failing seed is printed and replays
//! exactly.

use kms_simnet::sim::{random_scenario, Behaviour, Scenario};

const SEEDS: u64 = 500;

#[test]
fn property_holds_over_500_random_seeds() {
    let (mut retried, mut recovered, mut persist_crashes) = (0, 0, 0);
    for seed in 0..SEEDS {
        let out = random_scenario(seed).run(seed);
        assert!(
            out.violation.is_none(),
            "seed {seed} violates the property: {:?}\nscenario: {:?}\nreplay: cargo run -p kms-simnet -- sim --seed {seed}",
            out.violation,
            out.scenario
        );
        retried += out.failures.len();
        recovered += out.recovery_rounds.len();
        persist_crashes += out.persist_crashes;
    }
    eprintln!(
        "{SEEDS} seeds: property holds, {retried} failed attempts retried, {recovered} shares recovered, \
         {persist_crashes} crashes at persist points"
    );
    assert!(recovered > 0, "the random scenarios include late complaints that share recovery heals");
    assert!(persist_crashes > 50, "the random scenarios crash nodes at persist points: {persist_crashes}");
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17, 59] {
        let a = random_scenario(seed).run(seed);
        let b = random_scenario(seed).run(seed);
        assert_eq!(a.completed, b.completed);
        assert_eq!(a.failures, b.failures);
        assert_eq!((a.virtual_ms, a.delivered), (b.virtual_ms, b.delivered));
    }
}

#[test]
fn each_byzantine_behaviour_is_survived_and_named() {
    for b in Behaviour::ALL {
        let out = Scenario::new(7, 4).byzantine(3, b).drop(0.02).run(11);
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
            // Ed25519: passes every share check, found in the combination; BLS12-381: the
            // shares fail and the complaints go unanswered.
            Behaviour::Torsion => {
                assert!(named.contains("MalformedDeal"), "{named:?}");
                assert!(named.iter().any(|f| f.starts_with("UnansweredComplaint")), "{named:?}")
            }
            Behaviour::EquivocateOnce => unreachable!("not in Behaviour::ALL"),
        }
    }
}

#[test]
fn partitions_heal_and_crashed_nodes_rejoin() {
    // A node cut off for the whole ceremony adopts the transcript the others signed.
    let out = Scenario::new(5, 3).partition(0, 20_000, &[5]).run(5);
    assert!(out.violation.is_none(), "{:?}", out.violation);
    assert_eq!(out.completed.len(), 5);
    // A node that crashes right after dealing and comes back after the others finished rebuilds
    // its share from its persisted deal and logged messages.
    let out = Scenario::new(5, 3).crash(2, 50, Some(30_000)).run(6);
    assert!(out.violation.is_none(), "{:?}", out.violation);
    assert_eq!(out.completed.len(), 5);
    assert!(out.completed.values().all(|c| c.epoch == 1 && c.qual.contains(&2)));
}

#[test]
#[ignore]
fn debug_seed() {
    let seed: u64 = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(845);
    let sc = random_scenario(seed);
    eprintln!("{sc:?}");
    let out = sc.run(seed);
    assert_eq!(out.violation, None, "seed {seed}: {out:#?}");
}

/// Seed 1411 of a 5 000-seed run (once the simulator's known limit; pinned here as the scenario
/// that seed drew, since random scenarios have changed since): node 1 is partitioned
/// across the response round, so its complaint against a byzantine dealer that sent it a bad
/// share is never heard, the dealer withholds the justification, and the others qualify it.
/// Node 1 adopts the quorum transcript and recovers its share from t helpers. (The partition
/// lasted until 4.6 s; since rounds wait on while messages still arrive, the others' rounds
/// reach past that, so it now lasts until 9 s.)
#[test]
fn a_late_complaint_is_healed_by_share_recovery() {
    let out = Scenario::new(8, 4)
        .delay(1, 300)
        .partition(80, 9_000, &[1, 2])
        .byzantine(3, Behaviour::BadProof)
        .byzantine(8, Behaviour::BadShare)
        .run(1411);
    assert_eq!(out.violation, None);
    assert!(out.recovery_rounds.contains_key(&1), "node 1 recovered: {:?}", out.recovery_rounds);
    let honest = usize::from(out.scenario.n) - out.scenario.byzantine.len();
    assert_eq!(out.completed.len(), honest, "every honest node holds a share");
    let transcripts: std::collections::BTreeSet<_> = out.completed.values().map(|c| c.transcripts).collect();
    assert_eq!(transcripts.len(), 1, "no split");
}

/// Seed 296 of the first 500-seed run once a single peer could no longer pull running nodes into
/// its attempt (`docs/decisions.md` 26, 27): node 2 crashes right after dealing, having seen only
/// the version of node 4's equivocating deal that nodes 1, 3, 5 never saw; they qualify node 4 on
/// theirs and complete. No deal node 2 can receive rebuilds their transcript: it takes the key set
/// the others offer with their confirmations, which hashes to the transcript four nodes signed, and
/// recovers its share.
#[test]
fn a_node_holding_another_version_of_a_qualified_deal_adopts_the_key_set() {
    let out = Scenario::new(5, 4)
        .dup(0.02)
        .delay(1, 300)
        .crash(2, 63, Some(968))
        .byzantine(4, Behaviour::Equivocate)
        .run(296);
    assert_eq!(out.violation, None);
    assert!(out.completed.contains_key(&2), "node 2 holds a share: {:?}", out.completed.keys());
    assert_eq!(out.completed.len(), 4);
    let transcripts: std::collections::BTreeSet<_> = out.completed.values().map(|c| c.transcripts).collect();
    assert_eq!(transcripts.len(), 1);
}

/// The same late complaint, with two byzantine nodes that lie when asked to help: node 2 (the
/// withholding dealer) sends blinding values that do not match its commitments, node 3 a wrong
/// blinded share. Node 1 always recovers; whenever a liar was among its helpers it is named from
/// its signed evidence, and no honest node is ever named.
#[test]
fn share_recovery_names_lying_helpers_and_still_recovers() {
    let mut named = std::collections::BTreeSet::new();
    for seed in 1..=8 {
        let out = Scenario::new(7, 3)
            .byzantine(2, Behaviour::BadShare)
            .byzantine(3, Behaviour::BadConfirm)
            .partition(0, 7_000, &[1])
            .run(seed);
        assert_eq!(out.violation, None, "seed {seed}: recovery rounds {:?}", out.recovery_rounds);
        assert_eq!(out.completed.len(), 5, "seed {seed}: every honest node holds a share");
        assert!(out.recovery_rounds.contains_key(&1), "seed {seed}: {:?}", out.recovery_rounds);
        for (node, faults) in &out.culprits {
            for f in faults.iter().filter(|f| f.contains("Blinding") || f.contains("Recovery")) {
                let expected = match node {
                    2 => "BadBlinding",
                    3 => "BadRecoveryReply",
                    _ => panic!("seed {seed}: honest node {node} named: {f}"),
                };
                assert_eq!(f, expected, "seed {seed}");
                named.insert(*node);
            }
        }
    }
    assert_eq!(named, [2, 3].into(), "both liars were asked, and named, in some run");
}

/// The random key generation of seed 2102, reduced: node 1, cut off until 7 s, rebuilds attempt
/// 1's Ed25519 transcript from confirmations that reach it late, after every signer had failed the
/// attempt for want of them (dropped messages, retransmitted too late) and completed attempt 2.
/// Both attempts reached a quorum certificate on the wire. Node 1's share of attempt 1 must be
/// recovered, and no node holds attempt 1's keys: it used to ask forever. The nodes it asks hold
/// attempt 2's keys and remind it of them; `f + 1` such reminders make it observe attempt 2 and
/// adopt that key, the one every other honest node holds (`docs/decisions.md` 33).
#[test]
fn a_node_recovering_an_abandoned_attempt_follows_the_peers_holding_keys() {
    let out = Scenario::new(10, 4)
        .drop(0.1)
        .partition(47, 7_021, &[1])
        .byzantine(8, Behaviour::BadProof)
        .byzantine(10, Behaviour::Garbage)
        .byzantine(3, Behaviour::BadShare)
        .run(143);
    let twice: Vec<_> = out.certified.iter().filter(|(_, c)| c.len() > 1).collect();
    assert!(!twice.is_empty(), "the case needs two certified attempts: {:?}", out.certified);
    assert_eq!(out.violation, None);
    assert!(out.recovery_rounds.contains_key(&1), "node 1 was recovering: {:?}", out.recovery_rounds);
    let epochs: std::collections::BTreeSet<u64> = out.completed.values().map(|c| c.epoch).collect();
    assert_eq!(epochs, [2].into(), "every honest node, node 1 included, holds attempt 2's keys");
    assert!(out.completed.contains_key(&1));
}

/// The limit of share recovery (seed 94 of the random scenarios before they were restricted):
/// with t = n − f the honest nodes are exactly t. A node cut off across the response round, whose
/// complaint against a byzantine dealer goes unheard, needs t helpers besides itself, and only
/// t − 1 of them are honest: the byzantine one refuses to help honestly, is named every time, and
/// the node keeps asking. Safety holds (one transcript, the byzantine helper named, no wrong
/// share); the key then depends on the byzantine node. Choose t ≤ n − f − 1 to be safe from it.
#[test]
fn with_t_equal_to_n_minus_f_a_late_complaint_cannot_be_healed() {
    let out = Scenario::new(4, 3).byzantine(3, Behaviour::BadShare).partition(0, 7_000, &[1]).run(94);
    assert_eq!(
        out.violation,
        Some(kms_simnet::sim::Violation::TooFewShares { honest_with_share: 2, threshold: 3 })
    );
    assert_eq!(out.completed.keys().copied().collect::<Vec<_>>(), vec![2, 4]);
    let transcripts: std::collections::BTreeSet<_> = out.completed.values().map(|c| c.transcripts).collect();
    assert_eq!(transcripts.len(), 1, "no split");
    assert!(
        out.recovery_rounds.get(&1).is_some_and(|r| *r > 10),
        "node 1 keeps asking: {:?}",
        out.recovery_rounds
    );
}

/// Seed 3013 of a 5 000-seed run: node 3 signs the transcript and crashes before it hears the
/// others' signatures; node 2 confirms garbage, so the quorum (3 of 4) needs node 3's own
/// signature. Its confirmation is persisted before it is sent, so after the restart it counts
/// again (and node 3 can never sign another transcript in that attempt).
#[test]
fn a_node_restarted_after_confirming_keeps_its_signature() {
    let out = Scenario::new(4, 3)
        .byzantine(2, Behaviour::BadConfirm)
        .drop(0.01)
        .dup(0.02)
        .delay(1, 50)
        .crash(3, 111, Some(886))
        .run(3013);
    assert_eq!(out.violation, None);
    assert_eq!(out.completed.keys().copied().collect::<Vec<_>>(), vec![1, 3, 4]);
    assert!(out.completed.values().all(|c| c.epoch == 1), "{:?}", out.completed);
}

/// A node crashes around each kind of write the engine asks for, at each point (before the
/// write, after it but before what waited for it was sent, after sending), and restarts: never
/// two transcripts signed by one node in one attempt, never a split, and the node ends with the
/// cluster's key.
#[test]
fn a_crash_at_every_persist_point_never_double_signs_or_splits() {
    use kms_simnet::sim::{PersistPoint, WriteKind};
    let writes = [
        (WriteKind::Attempt, 1),
        (WriteKind::Record, 1),
        (WriteKind::Record, 2),
        (WriteKind::Message, 1),
        (WriteKind::Message, 12),
        (WriteKind::Record, 3),
        (WriteKind::Record, 4),
        (WriteKind::Activate, 1),
    ];
    let points = [PersistPoint::BeforeWrite, PersistPoint::AfterWrite, PersistPoint::AfterSend];
    for (kind, nth) in writes {
        for point in points {
            for seed in 0..3 {
                let out = Scenario::new(5, 3)
                    .drop(0.01)
                    .delay(1, 50)
                    .crash_at_write(2, kind, nth, point, 300 + 700 * seed)
                    .run(seed);
                let what = format!("{kind:?} #{nth} {point:?} seed {seed}");
                assert_eq!(out.violation, None, "{what}");
                assert_eq!(out.persist_crashes, 1, "{what}: the crash happened");
                assert_eq!(out.completed.len(), 5, "{what}: every node holds the key");
            }
        }
    }
}

/// The same with a byzantine node that confirms garbage, so the quorum (3 of 4) needs the
/// crashed node's own signature: it persisted its confirmation before sending, so it never
/// signs another transcript in that attempt, whichever side of the write it crashed on.
#[test]
fn a_crash_around_the_confirmation_record_when_the_quorum_needs_it() {
    use kms_simnet::sim::{PersistPoint, WriteKind};
    for point in [PersistPoint::BeforeWrite, PersistPoint::AfterWrite, PersistPoint::AfterSend] {
        for nth in [3, 4] {
            let out = Scenario::new(4, 3)
                .byzantine(2, Behaviour::BadConfirm)
                .crash_at_write(3, WriteKind::Record, nth, point, 900)
                .run(7);
            assert_eq!(out.violation, None, "{point:?} record #{nth}");
            assert_eq!(out.persist_crashes, 1, "{point:?} record #{nth}");
            assert_eq!(out.completed.keys().copied().collect::<Vec<_>>(), vec![1, 3, 4], "{point:?} #{nth}");
        }
    }
}

/// Both suites run, and activate together: every honest node holds one BLS12-381 and one
/// Ed25519 transcript of the same attempt, the same as every other node's.
#[test]
fn both_suites_complete_in_the_same_attempt() {
    let out = Scenario::new(7, 5).byzantine(4, Behaviour::Equivocate).drop(0.05).run(21);
    assert_eq!(out.violation, None);
    assert_eq!(out.completed.len(), 6);
    let pairs: std::collections::BTreeSet<_> =
        out.completed.values().map(|c| (c.epoch, c.transcripts)).collect();
    assert_eq!(pairs.len(), 1, "one attempt, one pair of transcripts: {pairs:?}");
    let (_, [bls, ed]) = pairs.into_iter().next().unwrap();
    assert_ne!(bls, ed, "two suites, two transcripts");
    assert!(out.culprits.get(&4).is_some_and(|f| f.contains("EquivocatedDeal")), "{:?}", out.culprits);
}

/// Retry without the culprits: node 4 equivocates in attempt 1 and deals honestly after. A
/// partition makes attempt 1 (and the attempt started during it) fail everywhere. The proof of
/// node 4's equivocation (its two signed deals) is carried into the attempt that succeeds and
/// shown to every node, so every honest node leaves node 4 out of QUAL there, though it dealt
/// correctly in it, and names it.
#[test]
fn a_retry_runs_without_a_dealer_proven_at_fault_in_an_earlier_attempt() {
    let out =
        Scenario::new(7, 3).byzantine(4, Behaviour::EquivocateOnce).partition(0, 12_000, &[1, 2, 3]).run(4);
    assert_eq!(out.violation, None);
    assert_eq!(out.completed.len(), 6, "{:?}", out.completed);
    assert!(out.failures.iter().any(|(_, attempt, _)| *attempt == 1), "attempt 1 failed: {:?}", out.failures);
    for (node, c) in &out.completed {
        assert!(c.epoch >= 2, "node {node}: a later attempt produced the key");
        assert!(!c.qual.contains(&4), "node {node}: node 4 left out of QUAL {:?}", c.qual);
        assert_eq!(c.qual.len(), 6, "node {node}: every other dealer qualified");
    }
    assert!(out.culprits.get(&4).is_some_and(|f| f.contains("EquivocatedDeal")), "{:?}", out.culprits);
    // The honest nodes are never named for a provable fault.
    for (node, faults) in &out.culprits {
        if *node != 4 {
            assert!(
                !faults.iter().any(|f| f.contains("Equivocated") || f.contains("InvalidProof")),
                "{node}: {faults:?}"
            );
        }
    }
}

// ----- resharing -----

mod reshare {
    //! The reshare property, through the same engine: with fewer than t corrupt old members
    //! (and t honest ones dealing), at most f' corrupt new members and the key generation's
    //! network faults, crashes at every persist point and late complaints, every honest new
    //! member activates the new epoch with one transcript and the old keys (t' new shares
    //! interpolate to the secret of the unchanged public key), leaving members hand over, and no
    //! honest node is named for a fault that needs a signature.

    use kms_simnet::sim::{random_reshare_scenario, Behaviour, Scenario, Seat, FROM_EPOCH};

    const SEEDS: u64 = 500;

    #[test]
    fn property_holds_over_500_random_reshares() {
        let (mut retried, mut recovered, mut persist_crashes, mut leaving) = (0, 0, 0, 0);
        for seed in 0..SEEDS {
            let sc = random_reshare_scenario(seed);
            let out = sc.run(seed);
            assert!(
                out.violation.is_none(),
                "seed {seed} violates the reshare property: {:?}\nscenario: {:?}\nreplay: cargo run -p kms-simnet -- sim --reshare --seed {seed}",
                out.violation,
                out.scenario
            );
            assert!(out.completed.values().all(|c| c.epoch > FROM_EPOCH));
            retried += out.failures.len();
            recovered += out.recovery_rounds.len();
            persist_crashes += out.persist_crashes;
            leaving += sc
                .reshare
                .as_ref()
                .map_or(0, |r| r.seats.iter().filter(|s| matches!(s, Seat::Leaves(_))).count());
        }
        eprintln!(
            "{SEEDS} reshares: property holds, {retried} failed attempts retried, {recovered} shares recovered, \
             {persist_crashes} crashes at persist points, {leaving} members left"
        );
        assert!(recovered > 0, "late complaints in reshares are healed by share recovery");
        assert!(persist_crashes > 50, "crashes at persist points: {persist_crashes}");
        assert!(leaving > 100, "members leave: {leaving}");
    }

    fn five_to_seven() -> Vec<Seat> {
        let mut seats: Vec<Seat> = (1..=5).map(Seat::Stays).collect();
        seats.extend([Seat::Joins, Seat::Joins]);
        seats
    }

    #[test]
    fn each_byzantine_behaviour_of_an_old_dealer_is_survived_and_named() {
        for b in Behaviour::ALL {
            let out = Scenario::reshare(5, 3, five_to_seven(), 4).byzantine(2, b).drop(0.02).run(21);
            assert!(out.violation.is_none(), "{b:?}: {:?}", out.violation);
            assert_eq!(out.completed.len(), 6, "{b:?}: every honest new member holds a share");
            let named = out.culprits.get(&2).cloned().unwrap_or_default();
            match b {
                Behaviour::Silent | Behaviour::Garbage => assert!(named.contains("MissingDeal"), "{named:?}"),
                Behaviour::BadShare => {
                    assert!(named.iter().any(|f| f.starts_with("UnansweredComplaint")), "{named:?}")
                }
                // A proof of knowledge where a reshare deal has none: malformed.
                Behaviour::BadProof => assert!(named.contains("MalformedDeal"), "{named:?}"),
                // Right constant term, different shares to different members.
                Behaviour::Equivocate => assert!(named.contains("EquivocatedDeal"), "{named:?}"),
                Behaviour::FalseComplaint => {
                    assert!(named.iter().any(|f| f.starts_with("FalseComplaint")), "{named:?}")
                }
                Behaviour::BadConfirm => {}
                // BLS12-381's shares fail their checks. (Ed25519's order-2 torsion is weighted by
                // the dealer's Lagrange coefficient: it vanishes when that is even.)
                Behaviour::Torsion => {
                    assert!(named.iter().any(|f| f.starts_with("UnansweredComplaint")), "{named:?}")
                }
                Behaviour::EquivocateOnce => unreachable!("not in Behaviour::ALL"),
            }
        }
    }

    #[test]
    fn a_new_member_that_lies_is_outvoted_and_named() {
        // New member 6 complains falsely about an honest dealer and confirms a random transcript.
        for b in [Behaviour::FalseComplaint, Behaviour::BadConfirm, Behaviour::Silent] {
            let out = Scenario::reshare(5, 3, five_to_seven(), 4).byzantine(6, b).run(22);
            assert!(out.violation.is_none(), "{b:?}: {:?}", out.violation);
            assert_eq!(out.completed.len(), 6);
        }
    }

    #[test]
    fn members_that_would_finalise_on_different_dealer_sets_agree_on_one() {
        // Members 1..3 (old dealers too) are cut off from the others through the deal round:
        // each side sees a different set of deals in time, and left to itself would finalise
        // on it. Complaints, justifications and the quorum transcript leave every member with
        // one dealer set.
        let out = Scenario::reshare(5, 3, five_to_seven(), 4).partition(0, 2_500, &[1, 2, 3]).run(23);
        assert!(out.violation.is_none(), "{:?}", out.violation);
        assert_eq!(out.completed.len(), 7);
        let quals: std::collections::BTreeSet<_> = out.completed.values().map(|c| c.qual.clone()).collect();
        assert_eq!(quals.len(), 1, "one dealer set: {quals:?}");
    }

    #[test]
    fn a_member_that_aborts_mid_round_rejoins_or_is_done_without() {
        // Member 2 crashes after its deal and restarts after the others finished; member 6 (new)
        // crashes and never comes back.
        let out =
            Scenario::reshare(5, 3, five_to_seven(), 4).crash(2, 30, Some(30_000)).crash(6, 40, None).run(24);
        assert!(out.violation.is_none(), "{:?}", out.violation);
        assert!(out.completed.contains_key(&2), "the restarted member adopts the transcript");
        assert_eq!(out.completed.len(), 6);
    }

    #[test]
    fn repeated_aborts_end_in_a_bounded_number_of_attempts() {
        // A majority of the new committee is cut off for 30 s: attempts fail (no quorum) until
        // the partition heals, then one completes; the retries are bounded by the time cut off.
        let out = Scenario::reshare(5, 3, five_to_seven(), 4).partition(0, 30_000, &[1, 2, 3, 4]).run(25);
        assert!(out.violation.is_none(), "{:?}", out.violation);
        assert_eq!(out.completed.len(), 7);
        let epochs: std::collections::BTreeSet<u64> = out.completed.values().map(|c| c.epoch).collect();
        assert_eq!(epochs.len(), 1);
        let epoch = *epochs.first().unwrap();
        assert!(epoch > FROM_EPOCH + 1, "attempts failed while cut off: epoch {epoch}");
        assert!(epoch <= FROM_EPOCH + 10, "no livelock: epoch {epoch}");
    }

    #[test]
    fn leaving_members_hand_over_and_removed_ones_never_deal() {
        // 7 -> 4: old 1, 2, 3 leave, old 7 is gone (lost its store); t 4 -> 3.
        let seats = vec![
            Seat::Stays(4),
            Seat::Stays(5),
            Seat::Stays(6),
            Seat::Joins,
            Seat::Leaves(1),
            Seat::Leaves(2),
            Seat::Leaves(3),
        ];
        let out = Scenario::reshare(7, 4, seats, 3).drop(0.05).run(26);
        assert!(out.violation.is_none(), "{:?}", out.violation);
        assert_eq!(out.completed.len(), 4);
        assert!(out.retired.iter().copied().eq([5, 6, 7]), "{:?}", out.retired);
    }

    /// Seed 1084 of the reshare property (`docs/decisions.md` 28): new member 1 confirms within
    /// ~100 ms and crashes at 118 ms; the quorum (4 of 5, member 4 confirming garbage) needs its
    /// signature. Before its confirmation-only record it came back not knowing it had signed and
    /// could never complete.
    #[test]
    fn a_new_member_that_confirmed_and_crashed_keeps_its_signature() {
        let seats = vec![Seat::Joins, Seat::Joins, Seat::Stays(3), Seat::Stays(2), Seat::Stays(1)];
        let out = Scenario::reshare(4, 2, seats, 2)
            .drop(0.01)
            .dup(0.1)
            .delay(1, 50)
            .crash(1, 118, Some(2_178))
            .byzantine(4, Behaviour::BadConfirm)
            .run(1084);
        assert_eq!(out.violation, None);
        assert!(out.completed.contains_key(&1), "{:?}", out.completed.keys());
    }

    #[test]
    fn a_reshare_seed_replays_exactly() {
        for seed in [4, 18] {
            let a = random_reshare_scenario(seed).run(seed);
            let b = random_reshare_scenario(seed).run(seed);
            assert_eq!(a.completed, b.completed);
            assert_eq!((a.virtual_ms, a.delivered), (b.virtual_ms, b.delivered));
        }
    }
}

mod chains {
    //! Reshares of reshares, through the engine: the keys one run ends with are the next run's
    //! old keys.

    use std::sync::Arc;

    use kms_simnet::sim::{Outcome, Scenario, Seat};

    fn keys_of(out: &Outcome) -> Vec<Arc<kms_dkg::ceremony::ActiveKeys>> {
        assert!(out.violation.is_none(), "{:?}", out.violation);
        out.keys.values().cloned().collect()
    }

    fn mpk(out: &Outcome) -> Vec<u8> {
        use kms_dkg::Suite;
        let k = out.keys.values().next().expect("keys");
        kms_dkg::Bls12381G2::encode_point(k.bls.public().public_key())
    }

    #[test]
    fn five_seven_four_six_with_t_changing_keeps_the_keys() {
        let mut seats: Vec<Seat> = (1..=5).map(Seat::Stays).collect();
        seats.extend([Seat::Joins, Seat::Joins]);
        let first = Scenario::reshare(5, 3, seats, 4).drop(0.05).run(31);
        let key = mpk(&first);
        // 7 -> 4 (t 3): 5, 6, 7 leave.
        let seats = vec![
            Seat::Stays(1),
            Seat::Stays(2),
            Seat::Stays(3),
            Seat::Stays(4),
            Seat::Leaves(5),
            Seat::Leaves(6),
            Seat::Leaves(7),
        ];
        let second = Scenario::reshare_of(keys_of(&first), seats, 3).delay(1, 100).run(32);
        assert_eq!(second.keys.len(), 4);
        assert_eq!(mpk(&second), key);
        // 4 -> 6 (t 4): two join, one of them replacing old 2, which lost its store (no dealer).
        let seats =
            vec![Seat::Stays(1), Seat::Joins, Seat::Stays(3), Seat::Stays(4), Seat::Joins, Seat::Joins];
        let third = Scenario::reshare_of(keys_of(&second), seats, 4).run(33);
        assert_eq!(third.keys.len(), 6);
        assert_eq!(mpk(&third), key);
        let epochs: Vec<u64> = [&first, &second, &third].iter().map(|o| o.keys[&1].epoch).collect();
        assert!(epochs.windows(2).all(|w| w[0] < w[1]), "epochs grow: {epochs:?}");
        assert!(keys_of(&third).iter().all(|k| k.bls.public().threshold() == 4));
    }

    #[test]
    fn twenty_consecutive_refreshes_keep_the_keys() {
        let seats = || (1..=4).map(Seat::Stays).collect::<Vec<_>>();
        let mut out = Scenario::reshare(4, 2, seats(), 2).run(40);
        let key = mpk(&out);
        for round in 1..20 {
            out = Scenario::reshare_of(keys_of(&out), seats(), 2).drop(0.02).run(40 + round);
            assert_eq!(mpk(&out), key, "refresh {round}");
        }
        assert_eq!(out.keys.len(), 4);
    }
}

/// Single-instance leases in their deterministic harness (`kms_simnet::lease_sim`): instances
/// racing through loss, partitions, node crashes, skewed clocks and byzantine nodes never both
/// hold a valid certificate, honest nodes serve one instance at a time in fence order, and a
/// dead holder is replaced within one lease time (plus the retry delay) once the network heals.
mod leases {
    use kms_simnet::lease_sim::{run, run_with};

    const SEEDS: u64 = 300;

    #[test]
    fn one_holder_at_a_time_over_300_random_seeds() {
        let (mut releases, mut acquisitions, mut handovers, mut longest) = (0, 0, 0, 0);
        let (mut byzantine_runs, mut silent_runs) = (0, 0);
        for seed in 0..SEEDS {
            let (sc, out) = run(seed);
            assert!(
                out.violations.is_empty(),
                "seed {seed}: {:?}\nscenario: {sc:?}\nreplay: cargo run -p kms-simnet -- sim --lease --seed {seed}",
                out.violations
            );
            releases += out.honest_releases;
            acquisitions += out.acquisitions;
            handovers += out.handovers;
            longest = longest.max(out.longest_handover);
            byzantine_runs += usize::from(!sc.byzantine.is_empty());
            silent_runs += usize::from(sc.n - sc.silent.len() < sc.quorum);
        }
        eprintln!(
            "{SEEDS} seeds: {acquisitions} acquisitions, {handovers} handovers (longest {longest} ms), \
             {releases} honest releases, {byzantine_runs} runs with byzantine nodes"
        );
        // The runs exercise what they claim to.
        assert!(handovers > SEEDS as usize / 4, "holders die and are replaced: {handovers}");
        assert!(acquisitions > handovers && releases > 1000);
        assert!(byzantine_runs > SEEDS as usize / 3, "{byzantine_runs}");
        assert!(silent_runs > 10, "runs where silent byzantine nodes leave no quorum: {silent_runs}");
    }

    /// The harness finds a second holder when the certificate quorum is too small: counting t
    /// grants (what a per-node scheme gives) lets byzantine nodes and a partition certify two
    /// instances at once. This is what the quorum ⌊(n + f)/2⌋ + 1 prevents.
    #[test]
    fn a_quorum_below_n_plus_f_over_two_lets_two_instances_hold() {
        let broken = (0..200u64)
            .filter(|&seed| {
                let (_, out) = run_with(seed, |sc| sc.quorum = sc.t.min(sc.quorum - 1).max(1));
                !out.violations.is_empty()
            })
            .count();
        assert!(broken > 10, "too small a quorum must show double holders: {broken} of 200 seeds");
    }
}

/// `kms-simnet reshare` against a network started with `kms-simnet up`: real processes on
/// 127.0.0.1. It grows the network (5 -> 7, t 3 -> 4), wipes and replaces a node, shrinks it
/// back (7 -> 5, t 3); each time it returns only once every member serves the new epoch and
/// `cluster.json` holds the new descriptor, under the same group key and master key. `down`
/// then stops every node, the added ones included.
mod local_network {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use kms_proto::cluster::SignedClusterDescriptor;
    use kms_proto::codec::decode_json;

    const BIN: &str = env!("CARGO_BIN_EXE_kms-simnet");

    fn descriptor(dir: &std::path::Path) -> SignedClusterDescriptor {
        decode_json(&std::fs::read(dir.join("cluster.json")).unwrap()).unwrap()
    }

    fn reshare(dir: &std::path::Path, args: &[&str]) {
        let parent = dir.parent().unwrap();
        let out = Command::new(BIN)
            .current_dir(parent)
            .args(["reshare", "--dir", "net"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "reshare {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn reshare_changes_a_running_local_network() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("net");
        // A relative --dir, as in the README (the configs must still name the right files).
        let mut up = Command::new(BIN)
            .current_dir(tmp.path())
            .args(["up", "--dir", "net"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
        // `up` prints "running; ..." once every node is ready and cluster.json is written.
        assert!(lines.any(|l| l.unwrap().starts_with("running;")), "up did not start the network");
        let d0 = descriptor(&dir);

        reshare(&dir, &["--nodes", "7", "--threshold", "4"]);
        let d1 = descriptor(&dir);
        assert_eq!((d1.descriptor.nodes.len(), d1.descriptor.threshold), (7, 4));
        assert!(d1.descriptor.epoch > d0.descriptor.epoch);
        d1.verify(Some(d0.descriptor.group_key.as_bytes())).unwrap();
        assert_eq!(d1.descriptor.mpk, d0.descriptor.mpk);

        reshare(&dir, &["--replace", "2"]);
        let d2 = descriptor(&dir);
        assert_ne!(
            d2.descriptor.nodes[1].peer_id, d1.descriptor.nodes[1].peer_id,
            "node 2 has a new identity"
        );
        assert_eq!(d2.descriptor.mpk, d0.descriptor.mpk);

        reshare(&dir, &["--nodes", "5", "--threshold", "3"]);
        let d3 = descriptor(&dir);
        assert_eq!((d3.descriptor.nodes.len(), d3.descriptor.threshold), (5, 3));
        assert_eq!(d3.descriptor.mpk, d0.descriptor.mpk);

        let out = Command::new(BIN).args(["down", "--dir"]).arg(&dir).output().unwrap();
        assert!(out.status.success());
        // `up` exits once every node it watches is gone; the added nodes were stopped by `down`.
        assert!(up.wait().unwrap().success());
        for k in 1..=7 {
            let pid = std::fs::read_to_string(dir.join(format!("node{k}/pid"))).unwrap();
            let alive = std::path::Path::new(&format!("/proc/{}", pid.trim())).exists();
            let zombie_or_gone = !alive
                || std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                    .is_ok_and(|s| s.contains(") Z "));
            assert!(zombie_or_gone, "node{k} (pid {pid}) still runs after down");
        }
    }
}
