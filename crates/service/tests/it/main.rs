//! End-to-end tests of the execution service: the simulator on port 0, a real `redis-server`
//! per test, and the service between them. Each test asserts on the results stream and on the
//! simulator's own order list.

mod catalogue;
mod control;
mod dead_man;
mod execution;
mod exit_path;
mod exits;
mod flatten;
mod hedge;
mod stack;
mod ws_orders;
