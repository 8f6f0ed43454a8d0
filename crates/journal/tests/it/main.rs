//! The journal's integration tests: a real Redis (`testkit::RedisServer`) and a real database
//! (SQLite in a temporary file; PostgreSQL from Debian's package, `testkit::PostgresServer`).

mod replay;
