//! What both dialects' upgrade tests check of a store opened on a database from before sale
//! windows or waiting rooms (each test makes that database its own way).

use super::contract::Store;
use super::error::StoreError;
use crate::domain::{Event, EventId, EventSpec, LineSeed, SaleWindow, UnixMillis, WaitingRoom};

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
    (old, windowed)
}

/// Event 1 as every upgrade test makes it (`old`: 10 tickets, 4 each, 2 sold) reads without a
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
