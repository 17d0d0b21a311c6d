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
