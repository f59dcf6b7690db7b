//! Property tests: the parsers and the frame decoder take any input without
//! panicking, and the decoder never allocates what a length prefix claims
//! before the bytes arrive.

use lake_shared::segment::{self, Locator};
use lake_shared::{catalog, member, mode, path, proto, ErrorKind};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn path_parser_never_panics(s in ".{0,600}") {
        if let Ok(segs) = path::parse(&s) {
            prop_assert!(s.len() <= lake_shared::MAX_FIELD_BYTES);
            prop_assert!(!s.chars().any(char::is_control));
            if s == "$" { prop_assert!(segs.is_empty()); }
        }
    }

    #[test]
    fn pointer_segments_round_trip(segs in proptest::collection::vec("[a-z/~.]{0,6}", 1..5)) {
        let pointer: String = segs.iter().map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1"))).collect();
        prop_assert_eq!(path::parse(&pointer).unwrap(), segs);
    }

    #[test]
    fn member_codec_round_trips_any_field(field in "[^\\x00-\\x1f]{1,60}") {
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let m = member::encode(&field, uuid);
        prop_assert_eq!(member::decode(&m).unwrap(), (field.as_str(), uuid));
    }

    #[test]
    fn member_decoder_never_panics(s in ".{0,100}") {
        let _ = member::decode(&s);
        let _ = member::decode_snap(&s);
    }

    #[test]
    fn names_and_modes_never_panic(s in ".{0,200}") {
        if catalog::validate(&s).is_ok() {
            let safe = s.split('/').all(|seg| !seg.is_empty() && !seg.starts_with('.'))
                && !s.contains(':')
                && !s.contains('{')
                && s.is_ascii();
            prop_assert!(safe, "accepted unsafe name {:?}", s);
        }
        let _ = mode::parse(&s);
        let _ = catalog::validate_uuid(&s);
    }

    #[test]
    fn any_uuid_decodes_to_a_record_inside_a_segment_or_is_refused(v in any::<u128>()) {
        let h = format!("{v:032x}");
        let u = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
        match Locator::from_uuid(&u) {
            Ok(Some(loc)) => {
                prop_assert!(loc.len > 0 && loc.end() <= segment::MAX_SEGMENT_BYTES);
                prop_assert_eq!(loc.to_uuid(), u);
            }
            Ok(None) => prop_assert_ne!(&u[14..15], "8"),
            Err(e) => prop_assert_eq!(e.kind, ErrorKind::Data),
        }
    }

    #[test]
    fn locators_round_trip(segment in 0u64..1 << 60, offset in 0u32..1 << 29, len in 1u32..1 << 29) {
        let loc = Locator { segment, offset, len };
        prop_assert_eq!(Locator::from_uuid(&loc.to_uuid()).unwrap(), Some(loc));
    }

    #[test]
    fn trailer_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128), magic in any::<bool>()) {
        let mut b = bytes;
        if magic { b.extend_from_slice(segment::MAGIC); }
        if let Err(e) = segment::decode_trailer(&b, "k") {
            prop_assert_eq!(e.kind, ErrorKind::Data);
        }
    }

    #[test]
    fn frame_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut r = bytes.as_slice();
        while let Ok(Some((_, payload))) = proto::read_frame(&mut r, 1 << 20) {
            let _ = proto::decode::<proto::Request>(&payload);
            let _ = proto::decode::<proto::Response>(&payload);
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating(len in 1u32 << 21.., tail in proptest::collection::vec(any::<u8>(), 0..32)) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend(tail);
        prop_assert!(proto::read_frame(&mut bytes.as_slice(), 1 << 20).is_err());
    }
}

/// A length prefix within the limit but with the body missing: the decoder
/// reads what is there and reports a truncated frame, with no allocation of
/// the claimed size up front.
#[test]
fn short_body_is_truncated_not_preallocated() {
    let mut bytes = ((1u32 << 20) - 1).to_be_bytes().to_vec();
    bytes.push(proto::VERSION);
    bytes.extend([0u8; 8]);
    bytes.extend(b"{}");
    assert!(proto::read_frame(&mut bytes.as_slice(), 1 << 20).is_err());
}
