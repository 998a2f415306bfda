//! Pure quoting models for mmd.
