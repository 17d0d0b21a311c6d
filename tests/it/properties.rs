//! Properties of range planning (proptest): successive runs tile the version line exactly —
//! no version read twice, none skipped — whatever the pins, and a new pipeline never starts
//! past the pin or before what is readable.

use deltalink::store::cdf::{plan_range, ReadRange};
use deltalink::store::lake::EarliestReadable;
use proptest::prelude::*;

proptest! {
    #[test]
    fn successive_runs_read_every_version_once(start in -1i64..20, steps in proptest::collection::vec(0u64..6, 1..12)) {
        let mut processed = start;
        let mut pinned = start.max(0) as u64;
        let mut read: Vec<u64> = Vec::new();
        for step in steps {
            pinned += step;
            match plan_range(Some(processed), pinned, EarliestReadable::FullHistory) {
                Some(ReadRange::Changes { start, end }) => {
                    prop_assert_eq!(end, pinned, "a run reads up to its pin");
                    read.extend(start..=end);
                    processed = end as i64;
                }
                Some(other) => prop_assert!(false, "a tracked pipeline reads changes only, got {:?}", other),
                None => prop_assert!(processed >= pinned as i64, "nothing new only when caught up"),
            }
        }
        let want: Vec<u64> = ((start + 1).max(0) as u64..=pinned).filter(|v| (*v as i64) > start).collect();
        prop_assert_eq!(read, want);
    }

    #[test]
    fn a_new_pipeline_starts_inside_the_readable_history(snapshot in 0u64..50, pinned in 0u64..60) {
        match plan_range(None, pinned, EarliestReadable::FromSnapshot(snapshot)) {
            Some(ReadRange::SnapshotThenChanges { snapshot: s, end }) => {
                prop_assert_eq!(end, pinned);
                prop_assert!(s <= pinned && s >= snapshot.min(pinned), "snapshot {} within [{}, {}]", s, snapshot.min(pinned), pinned);
            }
            other => prop_assert!(false, "a truncated log starts from a snapshot, got {:?}", other),
        }
        prop_assert_eq!(
            plan_range(None, pinned, EarliestReadable::FullHistory),
            Some(ReadRange::Changes { start: 0, end: pinned })
        );
    }
}
