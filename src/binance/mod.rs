pub mod sign;
pub mod types;
