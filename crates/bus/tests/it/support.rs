//! Re-exported from testkit so every crate starts Redis the same way.
pub use testkit::RedisServer;
