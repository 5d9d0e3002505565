//! Tests of `message`.
use super::*;
use crate::protocol::Header;
use proptest::prelude::*;

fn arb_record() -> impl Strategy<Value = Record> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        proptest::option::of("[a-z0-9]{1,12}"),
        proptest::collection::vec(
            ("[a-z-]{0,8}", proptest::collection::vec(any::<u8>(), 0..8)),
            0..3,
        ),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(key, dedup, headers, payload)| Record {
            key: key.map(Bytes::from),
            dedup_id: dedup,
            headers: headers
                .into_iter()
                .map(|(name, value)| Header {
                    name,
                    value: Bytes::from(value),
                })
                .collect(),
            payload: Bytes::from(payload),
        })
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), "[a-z]{0,10}", "[a-z]{0,10}").prop_map(|(v, c, t)| Request::Hello {
            max_version: v,
            client_id: c,
            token: t
        }),
        ("[a-z]{1,10}", any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(name, partitions, retention_bytes, retention_ms)| Request::CreateTopic {
                name,
                partitions,
                retention_bytes,
                retention_ms
            }
        ),
        ("[a-z]{1,10}", proptest::collection::vec(arb_record(), 0..5))
            .prop_map(|(topic, records)| Request::Produce { topic, records }),
        (
            "[a-z]{1,10}",
            "[a-z]{1,10}",
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(topic, group, ordered, a, b, c)| Request::Fetch(FetchRequest {
                    topic,
                    group,
                    mode: if ordered {
                        FetchMode::Ordered
                    } else {
                        FetchMode::Shared
                    },
                    max_records: a,
                    max_wait_ms: b,
                    lease_ms: c,
                    max_attempts: a ^ b,
                    prefetch: b ^ c,
                })
            ),
        (
            "[a-z]{1,10}",
            "[a-z]{1,10}",
            proptest::collection::vec(any::<u64>(), 0..10)
        )
            .prop_map(|(topic, group, ids)| Request::Ack { topic, group, ids }),
        (
            "[a-z]{1,10}",
            "[a-z]{1,10}",
            any::<u32>(),
            "[a-z ]{0,20}",
            proptest::collection::vec(any::<u64>(), 0..10)
        )
            .prop_map(|(topic, group, delay_ms, reason, ids)| Request::Nack {
                topic,
                group,
                delay_ms,
                reason,
                ids
            }),
        "[a-z]{0,10}".prop_map(|topic| Request::Stats { topic }),
    ]
}

proptest! {
    #[test]
    fn requests_round_trip(req in arb_request()) {
        let mut out = BytesMut::new();
        req.encode_body(&mut out);
        let body = out.freeze();
        let back = Request::decode_body(req.api_key(), &body).unwrap();
        prop_assert_eq!(back, req);
    }

    #[test]
    fn fetch_responses_round_trip(records in proptest::collection::vec(arb_record(), 0..5)) {
        let resp = Response::Fetch(records.into_iter().enumerate().map(|(i, record)| Delivery {
            delivery_id: i as u64,
            partition: 3,
            offset: i as u64 * 7,
            attempt: 1,
            timestamp_ms: 99,
            record,
        }).collect());
        let mut out = BytesMut::new();
        resp.encode_body(&mut out);
        let back = Response::decode_body(ApiKey::Fetch, &out.freeze()).unwrap();
        prop_assert_eq!(back, resp);
    }

    #[test]
    fn arbitrary_bodies_never_panic(api in 0u16..16, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let body = Bytes::from(body);
        if let Some(api) = ApiKey::from_u16(api) {
            let _ = Request::decode_body(api, &body);
            let _ = Response::decode_body(api, &body);
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut out = BytesMut::new();
    Request::Stats { topic: "t".into() }.encode_body(&mut out);
    out.put_u8(0);
    let err = Request::decode_body(ApiKey::Stats, &out.freeze()).unwrap_err();
    assert_eq!(err, DecodeError::Trailing { extra: 1 });
}

#[test]
fn produce_count_beyond_body_is_rejected_without_allocating() {
    let mut out = BytesMut::new();
    out.put_str("t");
    out.put_u32(u32::MAX);
    let err = Request::decode_body(ApiKey::Produce, &out.freeze()).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Short {
            field: "produce.records",
            ..
        }
    ));
}
