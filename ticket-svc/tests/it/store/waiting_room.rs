//! The store suite's tests of waiting rooms: a room stored with its event, and its line's
//! seal, recorded once (run on every store by `store_suite!` in `store.rs`).

use ticket_svc::domain::{EventId, EventSpec, LineSeed, SaleWindow, UnixMillis, WaitingRoom};
use ticket_svc::store::{Store, StoreError};

use super::spec;

/// A spec on sale from 2026-12-24T18:00:00Z, with `room` in front of it.
pub(super) fn spec_with_room(room: WaitingRoom) -> EventSpec {
    let window = SaleWindow::new(Some(UnixMillis(1_798_135_200_000)), None).unwrap();
    spec(10, 2)
        .with_window(window)
        .with_waiting_room(room)
        .unwrap()
}

pub(super) async fn waiting_rooms_round_trip<S: Store>(s: &S) {
    let fixed = LineSeed(std::array::from_fn(|i| u8::try_from(i * 7).unwrap()));
    for room in [
        WaitingRoom::with_seed(1, fixed.clone()).unwrap(),
        WaitingRoom::with_seed(1_000_000, LineSeed([0; 32])).unwrap(),
        WaitingRoom::with_seed(250, LineSeed([0xff; 32])).unwrap(),
        WaitingRoom::new(100).unwrap(),
        WaitingRoom::new(100)
            .unwrap()
            .with_proof_of_work(20)
            .unwrap(),
        WaitingRoom::new(5)
            .unwrap()
            .with_proof_of_work(i64::from(WaitingRoom::MAX_PROOF_OF_WORK_BITS))
            .unwrap(),
    ] {
        let e = s.create_event(&spec_with_room(room.clone())).await.unwrap();
        assert_eq!(e.waiting_room.as_ref(), Some(&room));
        let back = s.event(e.id).await.unwrap().unwrap();
        assert_eq!(back, e);
        let stored = back.waiting_room.unwrap();
        assert_eq!(stored.admit_per_s, room.admit_per_s);
        assert_eq!(stored.seed.0, room.seed.0);
        assert_eq!(stored.sealed_size, None);
        assert_eq!(stored.proof_of_work_bits, room.proof_of_work_bits);
    }
}

pub(super) async fn an_event_without_a_waiting_room_reads_none<S: Store>(s: &S) {
    let window = SaleWindow::new(Some(UnixMillis(1_798_135_200_000)), None).unwrap();
    for spec in [spec(10, 2), spec(10, 2).with_window(window)] {
        let e = s.create_event(&spec).await.unwrap();
        assert_eq!(e.waiting_room, None);
        assert_eq!(s.event(e.id).await.unwrap().unwrap().waiting_room, None);
    }
}

pub(super) async fn the_first_seal_of_a_line_stands<S: Store>(s: &S) {
    let e = s
        .create_event(&spec_with_room(WaitingRoom::new(50).unwrap()))
        .await
        .unwrap();
    assert_eq!(s.seal_line(e.id, 10).await.unwrap(), 10);
    assert_eq!(s.seal_line(e.id, 20).await.unwrap(), 10);
    assert_eq!(s.seal_line(e.id, 10).await.unwrap(), 10);
    let back = s.event(e.id).await.unwrap().unwrap();
    let room = back.waiting_room.unwrap();
    assert_eq!(room.sealed_size, Some(10));
    // Sealing changes nothing else.
    assert_eq!(
        WaitingRoom {
            sealed_size: None,
            ..room
        },
        e.waiting_room.unwrap()
    );

    // An empty pre-queue is a size too, and stands like any other.
    let empty = s
        .create_event(&spec_with_room(WaitingRoom::new(50).unwrap()))
        .await
        .unwrap();
    assert_eq!(s.seal_line(empty.id, 0).await.unwrap(), 0);
    assert_eq!(s.seal_line(empty.id, 5).await.unwrap(), 0);
    // Each event's line is its own.
    assert_eq!(s.seal_line(e.id, 30).await.unwrap(), 10);
}

pub(super) async fn concurrent_seals_of_a_line_all_answer_one_size<S: Store + Clone>(s: &S) {
    let e = s
        .create_event(&spec_with_room(WaitingRoom::new(50).unwrap()))
        .await
        .unwrap();
    let mut seals = tokio::task::JoinSet::new();
    for size in 100..108u64 {
        let s = s.clone();
        seals.spawn(async move { s.seal_line(e.id, size).await.unwrap() });
    }
    let mut answers = Vec::new();
    while let Some(answer) = seals.join_next().await {
        answers.push(answer.unwrap());
    }
    assert_eq!(answers.len(), 8);
    let first = answers[0];
    assert!((100..108).contains(&first), "{answers:?}");
    assert!(answers.iter().all(|a| *a == first), "{answers:?}");
    let room = s.event(e.id).await.unwrap().unwrap().waiting_room.unwrap();
    assert_eq!(room.sealed_size, Some(first));
}

pub(super) async fn sealing_needs_an_event_with_a_waiting_room<S: Store>(s: &S) {
    let plain = s.create_event(&spec(10, 2)).await.unwrap();
    let err = s.seal_line(plain.id, 10).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NoWaitingRoom { event } if event == plain.id),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_eq!(s.event(plain.id).await.unwrap().unwrap(), plain);

    let unknown = EventId(987_654);
    let err = s.seal_line(unknown, 10).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NoSuchEvent { event } if event == unknown),
        "{err}"
    );
    assert!(!err.is_transient());
    assert!(s.event(unknown).await.unwrap().is_none());
}
