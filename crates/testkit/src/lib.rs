//! Test-only helpers shared by the crates' integration tests (a dev-dependency, never shipped):
//! [`RedisServer`], a real `redis-server` on a free port for each test that needs the bus,
//! [`PostgresServer`], a throwaway PostgreSQL cluster for the journal's tests, and
//! [`fuzz`], the inputs of the decoders' fuzz tests.

pub mod fuzz;
mod postgres_server;
mod redis_server;

pub use postgres_server::PostgresServer;
pub use redis_server::RedisServer;
