//! splitter (being written).
