//! Test-only helpers shared by the crates' integration tests (a dev-dependency, never shipped):
//! [`RedisServer`], a real `redis-server` on a free port for each test that needs the bus, and
//! [`fuzz`], the inputs of the decoders' fuzz tests.

pub mod fuzz;
mod redis_server;

pub use redis_server::RedisServer;
