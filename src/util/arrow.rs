//! Arrow types and cell rendering shared by the link table, the tracker and the front ends.

use std::sync::Arc;

use deltalake::arrow::array::Array;
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};

/// The Delta/Arrow type the link table uses for timestamps.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Render one cell for people (preview, console). Strings unquoted; others via arrow's formatter.
pub fn display_value(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    deltalake::arrow::util::display::array_value_to_string(array, row).unwrap_or_else(|_| "?".into())
}

/// Arrow field for a list of strings as Delta stores it.
pub fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}

/// A dictionary array over `keys` (without NULLs), every key checked to index `values` in one
/// pass that vectorises: arrow's own check stops at the first bad key, a branch per key
/// (profiled: ~15 ms of the serial stretch before a 3M-key run's first write, for the link
/// rows' two lists and four constant columns).
pub(crate) fn dictionary_of<K>(
    keys: deltalake::arrow::array::PrimitiveArray<K>,
    values: deltalake::arrow::array::ArrayRef,
) -> Result<deltalake::arrow::array::DictionaryArray<K>, deltalake::arrow::error::ArrowError>
where
    K: deltalake::arrow::datatypes::ArrowDictionaryKeyType,
    K::Native: Into<i64>,
{
    use deltalake::arrow::array::DictionaryArray;
    if keys.null_count() > 0 {
        return DictionaryArray::try_new(keys, values);
    }
    // Each key as unsigned: a negative one wraps past any length.
    let widest = keys.values().iter().fold(0u64, |widest, &k| widest.max(k.into() as u64));
    if !keys.is_empty() && widest >= values.len() as u64 {
        return DictionaryArray::try_new(keys, values); // names the first bad key
    }
    // SAFETY: `keys` has no NULLs and every key lies in 0..values.len(), checked just above,
    // which is all `new_unchecked` asks beyond what `try_new` checks.
    Ok(unsafe { DictionaryArray::new_unchecked(keys, values) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int8Array, Int32Array, StringArray};
    use deltalake::arrow::datatypes::{Int8Type, Int32Type};

    #[test]
    fn dictionary_keys_are_checked_against_their_values() {
        let values = || Arc::new(StringArray::from(vec!["a", "b"])) as deltalake::arrow::array::ArrayRef;
        let ok = dictionary_of::<Int32Type>(Int32Array::from(vec![0, 1, 1, 0]), values()).expect("keys in range");
        assert_eq!(ok.keys().values().to_vec(), vec![0, 1, 1, 0]);
        assert!(dictionary_of::<Int32Type>(Int32Array::from(vec![0, 2]), values()).is_err(), "a key past the values");
        assert!(dictionary_of::<Int32Type>(Int32Array::from(vec![1, -1]), values()).is_err(), "a negative key");
        assert!(dictionary_of::<Int8Type>(Int8Array::from(vec![0, i8::MIN]), values()).is_err(), "a negative narrow key");
        let with_null = dictionary_of::<Int32Type>(Int32Array::from(vec![Some(1), None]), values()).expect("a NULL key");
        assert_eq!(with_null.null_count(), 1);
        assert!(dictionary_of::<Int32Type>(Int32Array::from(Vec::<i32>::new()), values()).is_ok());
    }
}
