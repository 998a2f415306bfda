pub mod decode;
pub mod sign;
pub mod types;
