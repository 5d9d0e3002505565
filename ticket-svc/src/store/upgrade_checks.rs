//! What both dialects' upgrade tests check of a store opened on a database from before sale
//! windows, waiting rooms or pacing (each test makes that database its own way).

use super::contract::Store;
use super::error::StoreError;
use crate::domain::{
    Event, EventId, EventSpec, LinePace, LineSeed, Pacing, SaleWindow, UnixMillis, WaitingRoom,
};

/// Event 1 (`old`, 10 tickets, 4 each, 2 sold) reads without a window or a room, event 2
/// (`windowed`, opening at `opens`) keeps its window and has no room, a line of neither seals,
/// and a new event beside them keeps its room and seals its line. Returns events 1 and 2 as
/// read.
pub(super) async fn events_from_before_waiting_rooms(
    store: &impl Store,
    opens: UnixMillis,
) -> (Event, Event) {
    let old = the_old_event(store).await;
    let windowed = store.event(EventId(2)).await.unwrap().unwrap();
    assert_eq!(windowed.window.opens_at(), Some(opens));
    assert_eq!(windowed.waiting_room, None);
    assert!(matches!(
        store.seal_line(EventId(1), 3).await,
        Err(StoreError::NoWaitingRoom { .. })
    ));
    assert!(matches!(
        store.line_pace(EventId(1)).await,
        Err(StoreError::NoWaitingRoom { .. })
    ));

    // New events beside them keep their rooms, and seal their lines.
    let room = WaitingRoom::with_seed(40, LineSeed([9; 32])).unwrap();
    let spec = EventSpec::new("new", 5, 1)
        .unwrap()
        .with_window(SaleWindow::new(Some(opens), None).unwrap())
        .with_waiting_room(room.clone())
        .unwrap();
    let new = store.create_event(&spec).await.unwrap();
    assert_eq!(
        store.event(new.id).await.unwrap().unwrap().waiting_room,
        Some(room)
    );
    assert_eq!(store.seal_line(new.id, 3).await.unwrap(), 3);
    assert_eq!(store.line_pace(new.id).await.unwrap(), None);
    (old, windowed)
}

/// Event 1 as the pacing upgrade tests make it (`roomy`: 10 tickets, 2 each, on sale from
/// `opens`, behind a room admitting 40 a second with the seed `[9; 32]`, its line sealed at 7
/// and asking 12 bits of work) keeps its room, paced fixed, with no line pace on record, and
/// records one; a new auto-paced room beside it keeps its pacing. Returns event 1 as read.
pub(super) async fn rooms_from_before_pacing(store: &impl Store, opens: UnixMillis) -> Event {
    let old = store.event(EventId(1)).await.unwrap().unwrap();
    let room = WaitingRoom {
        sealed_size: Some(7),
        ..WaitingRoom::with_seed(40, LineSeed([9; 32]))
            .unwrap()
            .with_proof_of_work(12)
            .unwrap()
    };
    assert_eq!(room.pacing, Pacing::Fixed);
    assert_eq!(
        old,
        Event {
            id: EventId(1),
            name: "roomy".into(),
            tickets: 10,
            max_per_buyer: 2,
            sold: 0,
            window: SaleWindow::new(Some(opens), None).unwrap(),
            waiting_room: Some(room),
        }
    );
    assert_eq!(store.line_pace(old.id).await.unwrap(), None);
    let first = LinePace::opening(opens, 40).turned(UnixMillis(opens.0 + 1_000), 80);
    assert_eq!(
        store.record_line_pace(old.id, None, first).await.unwrap(),
        super::RecordedPace {
            pace: first,
            won: true
        }
    );
    assert_eq!(store.line_pace(old.id).await.unwrap(), Some(first));
    assert_eq!(store.event(old.id).await.unwrap().unwrap(), old);

    // New rooms beside it keep their pacing.
    let auto = WaitingRoom::new(5).unwrap().with_pacing(Pacing::Auto);
    let spec = EventSpec::new("new", 5, 1)
        .unwrap()
        .with_window(SaleWindow::new(Some(opens), None).unwrap())
        .with_waiting_room(auto.clone())
        .unwrap();
    let new = store.create_event(&spec).await.unwrap();
    assert_eq!(
        store.event(new.id).await.unwrap().unwrap().waiting_room,
        Some(auto)
    );
    assert_eq!(store.line_pace(new.id).await.unwrap(), None);
    old
}

/// Event 1 as the window and room upgrade tests make it (`old`: 10 tickets, 4 each, 2 sold) reads without a
/// window or a room. Returns it as read.
async fn the_old_event(store: &impl Store) -> Event {
    let old = store.event(EventId(1)).await.unwrap().unwrap();
    assert_eq!(
        old,
        Event {
            id: EventId(1),
            name: "old".into(),
            tickets: 10,
            max_per_buyer: 4,
            sold: 2,
            window: SaleWindow::ALWAYS,
            waiting_room: None,
        }
    );
    old
}

/// Event 1 reads as [`the_old_event`], and a new event beside it keeps its window. Returns
/// event 1 as read.
pub(super) async fn events_from_before_sale_windows(store: &impl Store) -> Event {
    let old = the_old_event(store).await;

    // New events beside it keep their windows.
    let opens = UnixMillis(1_798_135_200_000);
    let window = SaleWindow::new(Some(opens), Some(UnixMillis(opens.0 + 1))).unwrap();
    let spec = EventSpec::new("new", 5, 1).unwrap().with_window(window);
    let new = store.create_event(&spec).await.unwrap();
    assert_eq!(store.event(new.id).await.unwrap().unwrap().window, window);
    old
}

/// What the migrated `events.line_pacing` takes, on event 1 (with a room) and on an event
/// without one: (pacing, with a room, accepted).
pub(super) const PACING_CHECKS: &[(&str, bool, bool)] = &[
    ("fixed", true, true),
    ("auto", true, true),
    ("fixed", false, true),
    ("auto", false, false),
    ("fast", true, false),
    ("AUTO", true, false),
    ("", true, false),
];

/// What the migrated `line_paces` takes for event 1: (admitted_milli, per_s, accepted).
pub(super) const LINE_PACE_CHECKS: &[(i64, i64, bool)] = &[
    (0, 1, true),
    (i64::MAX, 1_000_000, true),
    (-1, 5, false),
    (0, 0, false),
    (0, -1, false),
    (0, 1_000_001, false),
];
