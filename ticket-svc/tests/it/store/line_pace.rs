//! The store suite's tests of a room's pacing and of its line's pace, the latest point of its
//! admission curve (run on every store by `store_suite!` in `store.rs`).

use ticket_svc::domain::{EventId, LinePace, Pacing, UnixMillis, WaitingRoom};
use ticket_svc::store::{RecordedPace, Store, StoreError};

use super::spec;
use super::waiting_room::spec_with_room;

/// When the rooms of [`spec_with_room`] open.
const OPENS: UnixMillis = UnixMillis(1_798_135_200_000);

/// `OPENS` and `ms` milliseconds.
fn after(ms: i64) -> UnixMillis {
    UnixMillis(OPENS.0 + ms)
}

/// A new event behind an auto-paced room admitting 100 a second.
async fn auto_paced<S: Store>(s: &S) -> EventId {
    let room = WaitingRoom::new(100).unwrap().with_pacing(Pacing::Auto);
    s.create_event(&spec_with_room(room)).await.unwrap().id
}

pub(super) async fn pacing_round_trips<S: Store>(s: &S) {
    for room in [
        WaitingRoom::new(100).unwrap(),
        WaitingRoom::new(100).unwrap().with_pacing(Pacing::Fixed),
        WaitingRoom::new(1).unwrap().with_pacing(Pacing::Auto),
        WaitingRoom::new(1_000_000)
            .unwrap()
            .with_pacing(Pacing::Auto)
            .with_proof_of_work(20)
            .unwrap(),
    ] {
        let e = s.create_event(&spec_with_room(room.clone())).await.unwrap();
        assert_eq!(e.waiting_room.as_ref(), Some(&room));
        let back = s.event(e.id).await.unwrap().unwrap();
        assert_eq!(back, e);
        assert_eq!(back.waiting_room.unwrap().pacing, room.pacing);
    }
    // Sealing an auto-paced line, or moving its pace on, leaves its pacing as it was.
    let id = auto_paced(s).await;
    s.seal_line(id, 3).await.unwrap();
    s.record_line_pace(id, None, LinePace::opening(OPENS, 7))
        .await
        .unwrap();
    let room = s.event(id).await.unwrap().unwrap().waiting_room.unwrap();
    assert_eq!((room.pacing, room.sealed_size), (Pacing::Auto, Some(3)));
    // An event without a room has no pacing to keep.
    let plain = s.create_event(&spec(10, 2)).await.unwrap();
    assert_eq!(plain.waiting_room, None);
    assert_eq!(s.event(plain.id).await.unwrap().unwrap().waiting_room, None);
}

pub(super) async fn no_line_pace_is_on_record_at_first<S: Store>(s: &S) {
    let auto = auto_paced(s).await;
    assert_eq!(s.line_pace(auto).await.unwrap(), None);
    let fixed = s
        .create_event(&spec_with_room(WaitingRoom::new(100).unwrap()))
        .await
        .unwrap();
    assert_eq!(s.line_pace(fixed.id).await.unwrap(), None);
}

/// The answer of a call that recorded `pace`.
fn won(pace: LinePace) -> RecordedPace {
    RecordedPace { pace, won: true }
}

/// The answer of a call that found `pace` recorded by another.
fn lost(pace: LinePace) -> RecordedPace {
    RecordedPace { pace, won: false }
}

pub(super) async fn the_first_line_pace_recorded_stands<S: Store>(s: &S) {
    let e = auto_paced(s).await;
    let opening = LinePace::opening(OPENS, 100);
    let first = opening.turned(after(2_000), 50);
    assert_eq!(
        s.record_line_pace(e, None, first).await.unwrap(),
        won(first)
    );
    assert_eq!(s.line_pace(e).await.unwrap(), Some(first));
    // A second caller that also saw none recorded loses, and reads the winner's point.
    let late = opening.turned(after(2_500), 200);
    assert_eq!(
        s.record_line_pace(e, None, late).await.unwrap(),
        lost(first)
    );
    assert_eq!(s.line_pace(e).await.unwrap(), Some(first));

    // Each event's line is its own.
    let other = auto_paced(s).await;
    assert_eq!(s.line_pace(other).await.unwrap(), None);
    assert_eq!(
        s.record_line_pace(other, None, late).await.unwrap(),
        won(late)
    );
    assert_eq!(s.line_pace(e).await.unwrap(), Some(first));
}

pub(super) async fn a_line_pace_moves_on_only_from_the_one_on_record<S: Store>(s: &S) {
    let e = auto_paced(s).await;
    let first = LinePace::opening(OPENS, 100).turned(after(1_000), 50);
    s.record_line_pace(e, None, first).await.unwrap();
    let second = first.turned(after(3_000), 400);
    assert_eq!(
        second.admitted_milli, 200_000,
        "the curve goes on where it was"
    );
    assert_eq!(
        s.record_line_pace(e, Some(first), second).await.unwrap(),
        won(second)
    );
    assert_eq!(s.line_pace(e).await.unwrap(), Some(second));

    // From a point no longer on record: the winner stands, unchanged, whichever field differs.
    let from_first = first.turned(after(3_500), 10);
    assert_eq!(
        s.record_line_pace(e, Some(first), from_first)
            .await
            .unwrap(),
        lost(second)
    );
    for stale in [
        LinePace {
            at: after(3_001),
            ..second
        },
        LinePace {
            admitted_milli: second.admitted_milli + 1,
            ..second
        },
        LinePace {
            per_s: second.per_s + 1,
            ..second
        },
    ] {
        let next = stale.turned(after(4_000), 10);
        assert_eq!(
            s.record_line_pace(e, Some(stale), next).await.unwrap(),
            lost(second),
            "{stale:?}"
        );
    }
    assert_eq!(s.line_pace(e).await.unwrap(), Some(second));

    // A point said to be on record where none is records nothing.
    let fresh = auto_paced(s).await;
    let opening = LinePace::opening(OPENS, 100);
    let refused = s
        .record_line_pace(fresh, Some(opening), first)
        .await
        .unwrap_err();
    assert!(!refused.is_transient(), "{refused}");
    assert_eq!(s.line_pace(fresh).await.unwrap(), None);
}

pub(super) async fn a_line_pace_past_i64_max_is_stored_at_it<S: Store>(s: &S) {
    let e = auto_paced(s).await;
    let huge = LinePace {
        at: after(1_000),
        admitted_milli: u64::MAX,
        per_s: 5,
        per_s_before: 100,
    };
    let stored = LinePace {
        admitted_milli: u64::try_from(i64::MAX).unwrap(),
        ..huge
    };
    assert_eq!(
        s.record_line_pace(e, None, huge).await.unwrap(),
        won(stored)
    );
    assert_eq!(s.line_pace(e).await.unwrap(), Some(stored));
    // The point as read back is the one to move on from (at once, so it admits no more).
    let next = stored.turned(stored.at, 9);
    assert_eq!(
        s.record_line_pace(e, Some(stored), next).await.unwrap(),
        won(next)
    );
}

pub(super) async fn concurrent_line_pace_records_all_answer_one_winner<S: Store + Clone>(s: &S) {
    let e = auto_paced(s).await;
    // First from none recorded (racing inserts), then from the point that won (racing updates).
    let mut current: Option<LinePace> = None;
    for _ in 0..2 {
        let candidates: Vec<LinePace> = (0..8u32)
            .map(|i| match current {
                None => LinePace::opening(OPENS, 100).turned(after(1_000), 50 + i),
                Some(c) => c.turned(after(2_000 + i64::from(i)), 10 + i),
            })
            .collect();
        let mut recorders = tokio::task::JoinSet::new();
        for next in candidates.clone() {
            let s = s.clone();
            recorders.spawn(async move { s.record_line_pace(e, current, next).await.unwrap() });
        }
        let mut answers = Vec::new();
        while let Some(answer) = recorders.join_next().await {
            answers.push(answer.unwrap());
        }
        assert_eq!(answers.len(), 8);
        let winner = answers[0].pace;
        assert!(candidates.contains(&winner), "{answers:?}");
        assert!(answers.iter().all(|a| a.pace == winner), "{answers:?}");
        assert_eq!(
            answers.iter().filter(|a| a.won).count(),
            1,
            "one recorded it: {answers:?}"
        );
        assert_eq!(s.line_pace(e).await.unwrap(), Some(winner));
        current = Some(winner);
    }
}

pub(super) async fn line_paces_need_an_event_with_a_waiting_room<S: Store>(s: &S) {
    let pace = LinePace::opening(OPENS, 10);
    let plain = s.create_event(&spec(10, 2)).await.unwrap();
    for err in [
        s.line_pace(plain.id).await.unwrap_err(),
        s.record_line_pace(plain.id, None, pace).await.unwrap_err(),
        s.record_line_pace(plain.id, Some(pace), pace)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(err, StoreError::NoWaitingRoom { event } if event == plain.id),
            "{err}"
        );
        assert!(!err.is_transient());
    }
    assert_eq!(s.event(plain.id).await.unwrap().unwrap(), plain);

    let unknown = EventId(987_654);
    for err in [
        s.line_pace(unknown).await.unwrap_err(),
        s.record_line_pace(unknown, None, pace).await.unwrap_err(),
        s.record_line_pace(unknown, Some(pace), pace)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(err, StoreError::NoSuchEvent { event } if event == unknown),
            "{err}"
        );
        assert!(!err.is_transient());
    }
    assert!(s.event(unknown).await.unwrap().is_none());
}
