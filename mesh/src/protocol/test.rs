//! Tests of the forward protocol's frames and messages over in-memory streams
//! (`tokio::io::duplex` and byte slices; the real QUIC streams are tested in `transport`).
//!
//! This test binary installs a global allocator that records the largest single allocation a
//! thread makes while armed: it is how the tests check that a hostile length prefix or body
//! cannot make `read_frame` allocate more than the frame limit.

use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

use super::*;

mod alloc_probe {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Delegates to [`System`] and records the largest request while the thread is armed.
    pub(super) struct Probe;

    thread_local! {
        // `const` initialisers without destructors: reading them never allocates, so the
        // allocator can use them.
        static ARMED: Cell<bool> = const { Cell::new(false) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    fn record(size: usize) {
        let _ = ARMED.try_with(|armed| {
            if armed.get() {
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(size)));
            }
        });
    }

    // SAFETY: every call is forwarded unchanged to the system allocator.
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            record(layout.size());
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            record(layout.size());
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            record(new_size);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Starts recording on this thread.
    pub(super) fn arm() {
        PEAK.set(0);
        ARMED.set(true);
    }

    /// Stops recording and returns the largest allocation since [`arm`].
    pub(super) fn disarm() -> usize {
        ARMED.set(false);
        PEAK.get()
    }
}

#[global_allocator]
static PROBE: alloc_probe::Probe = alloc_probe::Probe;

fn request(image_len: usize) -> TaskRequest {
    TaskRequest {
        task_id: "task-42".into(),
        image: (0..image_len).map(|i| (i % 251) as u8).collect(),
        threshold: 0.5,
        simplify_tolerance: Some(1.25),
        deadline_ms: 30_000,
        hops: 1,
        entry_node: "node-a".into(),
        refuse_above_ms: None,
    }
}

fn responses() -> Vec<TaskResponse> {
    let mut all = vec![
        TaskResponse::Done {
            polygons_json: br#"{"polygons":[]}"#.to_vec(),
            width: 1024,
            height: 768,
            processing_ms: 812,
            processed_by: "node-b".into(),
            active_after: Some(3),
        },
        TaskResponse::Busy {
            retry_after_ms: 250,
            active_now: Some(4),
        },
    ];
    for kind in [
        FailureKind::BadImage,
        FailureKind::Internal,
        FailureKind::DeadlineExceeded,
        FailureKind::ShuttingDown,
    ] {
        all.push(TaskResponse::Failed {
            kind,
            message: format!("{kind:?}"),
        });
    }
    all
}

/// Reads one frame from `bytes` with the allocation probe armed; returns the result, the
/// largest allocation and the bytes left unread.
fn probed_read<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> (Result<T, FrameError>, usize, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut reader = bytes;
    let (result, peak) = runtime.block_on(async {
        alloc_probe::arm();
        let result = read_frame::<_, T>(&mut reader, max).await;
        (result, alloc_probe::disarm())
    });
    (result, peak, reader.len())
}

#[test]
fn the_allocation_probe_sees_allocations() {
    alloc_probe::arm();
    let buffer = std::hint::black_box(vec![1u8; 10_000]);
    let peak = alloc_probe::disarm();
    drop(buffer);
    assert!(peak >= 10_000, "probe saw {peak} bytes");
}

#[tokio::test]
async fn every_message_round_trips_over_a_duplex_stream() {
    // A small pipe forces partial reads and writes of the larger frames.
    let (mut tx, mut rx) = tokio::io::duplex(8 * 1024);
    let requests = vec![
        request(3 * 1024 * 1024),
        TaskRequest {
            simplify_tolerance: None,
            ..request(0)
        },
    ];
    let responses = responses();
    let (sent_requests, sent_responses) = (requests.clone(), responses.clone());
    let writer = async move {
        for r in &sent_requests {
            write_frame(&mut tx, r, DEFAULT_MAX_FRAME).await?;
        }
        for r in &sent_responses {
            write_frame(&mut tx, r, DEFAULT_MAX_FRAME).await?;
        }
        tx.shutdown().await?;
        Ok::<_, FrameError>(())
    };
    let reader = async {
        let mut got_requests = Vec::new();
        for _ in 0..requests.len() {
            got_requests.push(read_frame::<_, TaskRequest>(&mut rx, DEFAULT_MAX_FRAME).await?);
        }
        let mut got_responses = Vec::new();
        for _ in 0..responses.len() {
            got_responses.push(read_frame::<_, TaskResponse>(&mut rx, DEFAULT_MAX_FRAME).await?);
        }
        let end = read_frame::<_, TaskResponse>(&mut rx, DEFAULT_MAX_FRAME).await;
        Ok::<_, FrameError>((got_requests, got_responses, end))
    };
    let (written, read) = tokio::join!(writer, reader);
    written.expect("writer");
    let (got_requests, got_responses, end) = read.expect("reader");
    assert_eq!(got_requests, requests);
    assert_eq!(got_responses, responses);
    assert!(matches!(end, Err(FrameError::Closed)), "{end:?}");
}

#[test]
fn sync_helpers_round_trip_and_check_bounds() {
    for response in responses() {
        let frame = encode(&response, DEFAULT_MAX_FRAME).expect("encode");
        let back: TaskResponse = decode(&frame, DEFAULT_MAX_FRAME).expect("decode");
        assert_eq!(back, response);

        let mut longer = frame.clone();
        longer.push(0);
        let err = decode::<TaskResponse>(&longer, DEFAULT_MAX_FRAME).unwrap_err();
        assert!(
            matches!(err, FrameError::TrailingBytes { extra: 1 }),
            "{err:?}"
        );

        let err = decode::<TaskResponse>(&frame[..frame.len() - 1], DEFAULT_MAX_FRAME);
        assert!(matches!(err, Err(FrameError::Truncated { .. })), "{err:?}");
    }
    let err = decode::<TaskResponse>(&[0, 0], DEFAULT_MAX_FRAME).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::Truncated {
                expected: HEADER_LEN,
                received: 2
            }
        ),
        "{err:?}"
    );
}

#[test]
fn wire_format_is_big_endian_length_and_named_fields() {
    let frame = encode(&request(3), DEFAULT_MAX_FRAME).expect("encode");
    let body_len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(body_len, frame.len() - HEADER_LEN);
    // 0x88: a MessagePack fixmap of 8 entries, i.e. structs are maps keyed by field name.
    assert_eq!(frame[HEADER_LEN], 0x88);
    // The image is MessagePack `bin` (0xc4 = bin 8), not an array of integers.
    let image_at = frame
        .windows(5)
        .position(|w| w == b"image")
        .expect("image key");
    assert_eq!(frame[image_at + 5], 0xc4);
}

/// A request as nodes without `refuse_above_ms` encode and decode it.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct RequestWithoutRefusal {
    task_id: String,
    #[serde(with = "serde_bytes")]
    image: Vec<u8>,
    threshold: f32,
    simplify_tolerance: Option<f64>,
    deadline_ms: u64,
    hops: u8,
    entry_node: String,
}

#[test]
fn nodes_with_and_without_the_refusal_threshold_understand_each_other() {
    let old = RequestWithoutRefusal {
        task_id: "t".into(),
        image: vec![1, 2, 3],
        threshold: 0.5,
        simplify_tolerance: None,
        deadline_ms: 1_000,
        hops: 1,
        entry_node: "a".into(),
    };
    let frame = encode(&old, DEFAULT_MAX_FRAME).expect("encode");
    let new: TaskRequest = decode(&frame, DEFAULT_MAX_FRAME).expect("an old request decodes");
    assert_eq!(new.refuse_above_ms, None);
    assert_eq!(new.task_id, "t");
    let frame = encode(
        &TaskRequest {
            refuse_above_ms: Some(650),
            ..new
        },
        DEFAULT_MAX_FRAME,
    )
    .expect("encode");
    let back: RequestWithoutRefusal = decode(&frame, DEFAULT_MAX_FRAME).expect("old nodes skip it");
    assert_eq!(back, old);
    // A busy answer's load is optional both ways too.
    let frame = encode(
        &TaskResponse::Busy {
            retry_after_ms: 5,
            active_now: Some(3),
        },
        DEFAULT_MAX_FRAME,
    )
    .expect("encode");
    let busy: TaskResponse = decode(&frame, DEFAULT_MAX_FRAME).expect("decode");
    assert!(matches!(
        busy,
        TaskResponse::Busy {
            active_now: Some(3),
            ..
        }
    ));
}

#[tokio::test]
async fn encoding_past_the_limit_writes_nothing() {
    let mut sink = Vec::new();
    let err = write_frame(&mut sink, &request(100), 64).await.unwrap_err();
    assert!(
        matches!(err, FrameError::TooLarge { max: 64, .. }),
        "{err:?}"
    );
    assert!(sink.is_empty());
}

#[test]
fn announced_length_over_the_limit_is_refused_before_reading_or_allocating() {
    let mut bytes = vec![0xff, 0xff, 0xff, 0xff];
    bytes.extend_from_slice(b"rest of the stream");
    let max = 1024;
    let (result, peak, unread) = probed_read::<TaskRequest>(&bytes, max);
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::TooLarge {
                len: 0xffff_ffff,
                max: 1024
            }
        ),
        "{err:?}"
    );
    assert_eq!(unread, b"rest of the stream".len(), "body must not be read");
    assert!(peak <= max, "allocated {peak} bytes");

    // One byte over the limit is refused too.
    let over = ((max + 1) as u32).to_be_bytes();
    let (result, _, _) = probed_read::<TaskRequest>(&over, max);
    assert!(matches!(
        result,
        Err(FrameError::TooLarge { len: 1025, .. })
    ));
}

#[test]
fn a_large_announcement_with_few_bytes_allocates_by_arrival() {
    // 60 MiB announced, 10 bytes sent: the buffer must stay at the first chunk.
    let mut bytes = (60u32 * 1024 * 1024).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0; 10]);
    let (result, peak, _) = probed_read::<TaskRequest>(&bytes, DEFAULT_MAX_FRAME);
    assert!(
        matches!(result, Err(FrameError::Truncated { received: 10, .. })),
        "{result:?}"
    );
    assert!(peak <= 64 * 1024, "allocated {peak} bytes");
}

#[tokio::test]
async fn truncated_streams_are_reported() {
    let frame = encode(&request(100), DEFAULT_MAX_FRAME).expect("encode");

    let mut empty: &[u8] = &[];
    let err = read_frame::<_, TaskRequest>(&mut empty, DEFAULT_MAX_FRAME).await;
    assert!(matches!(err, Err(FrameError::Closed)), "{err:?}");

    let mut header_only: &[u8] = &frame[..2];
    let err = read_frame::<_, TaskRequest>(&mut header_only, DEFAULT_MAX_FRAME).await;
    assert!(
        matches!(
            err,
            Err(FrameError::Truncated {
                expected: 4,
                received: 2
            })
        ),
        "{err:?}"
    );

    let cut = frame.len() - 7;
    let mut partial_body: &[u8] = &frame[..cut];
    let err = read_frame::<_, TaskRequest>(&mut partial_body, DEFAULT_MAX_FRAME).await;
    let expected = frame.len() - HEADER_LEN;
    let received = cut - HEADER_LEN;
    assert!(
        matches!(err, Err(FrameError::Truncated { expected: e, received: r }) if e == expected && r == received),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_body_is_a_decode_error() {
    // 0xc1 is the one byte MessagePack never uses.
    let mut bytes: &[u8] = &[0, 0, 0, 3, 0xc1, 0xc1, 0xc1];
    let err = read_frame::<_, TaskRequest>(&mut bytes, DEFAULT_MAX_FRAME).await;
    assert!(matches!(err, Err(FrameError::Decode(_))), "{err:?}");

    // A valid frame of the wrong message type is a decode error too.
    let frame = encode(
        &TaskResponse::Busy {
            retry_after_ms: 1,
            active_now: None,
        },
        DEFAULT_MAX_FRAME,
    )
    .expect("encode");
    let mut bytes: &[u8] = &frame;
    let err = read_frame::<_, TaskRequest>(&mut bytes, DEFAULT_MAX_FRAME).await;
    assert!(matches!(err, Err(FrameError::Decode(_))), "{err:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_streams_never_panic_or_overallocate(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        max in 4096usize..65_536,
    ) {
        let (_, peak, _) = probed_read::<TaskRequest>(&bytes, max);
        prop_assert!(peak <= max, "allocated {} bytes with max {}", peak, max);
        let (_, peak, _) = probed_read::<TaskResponse>(&bytes, max);
        prop_assert!(peak <= max, "allocated {} bytes with max {}", peak, max);
    }

    #[test]
    fn random_bodies_behind_valid_prefixes_never_panic_or_overallocate(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        max in 4096usize..65_536,
    ) {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        let (_, peak, unread) = probed_read::<TaskRequest>(&bytes, max);
        prop_assert!(peak <= max, "allocated {} bytes with max {}", peak, max);
        prop_assert_eq!(unread, 0);
        let (_, peak, _) = probed_read::<TaskResponse>(&bytes, max);
        prop_assert!(peak <= max, "allocated {} bytes with max {}", peak, max);
    }

    #[test]
    fn mutated_valid_frames_never_panic_or_overallocate(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        image_len in 0usize..512,
    ) {
        let mut frame = encode(&request(image_len), DEFAULT_MAX_FRAME).expect("encode");
        for (at, value) in flips {
            let i = at.index(frame.len());
            frame[i] = value;
        }
        let max = 4096;
        let (_, peak, _) = probed_read::<TaskRequest>(&frame, max);
        prop_assert!(peak <= max, "allocated {} bytes", peak);
    }
}

/// A `Done` from a peer that does not send `active_after` still decodes (as `None`).
#[test]
fn done_without_the_piggybacked_load_decodes() {
    #[derive(serde::Serialize)]
    enum OldResponse {
        Done {
            #[serde(with = "serde_bytes")]
            polygons_json: Vec<u8>,
            width: u32,
            height: u32,
            processing_ms: u64,
            processed_by: String,
        },
    }
    let old = OldResponse::Done {
        polygons_json: b"[]".to_vec(),
        width: 1,
        height: 2,
        processing_ms: 3,
        processed_by: "old-peer".into(),
    };
    let frame = encode(&old, DEFAULT_MAX_FRAME).expect("encode");
    let decoded: TaskResponse = decode(&frame, DEFAULT_MAX_FRAME).expect("decode");
    assert_eq!(
        decoded,
        TaskResponse::Done {
            polygons_json: b"[]".to_vec(),
            width: 1,
            height: 2,
            processing_ms: 3,
            processed_by: "old-peer".into(),
            active_after: None,
        }
    );
}
