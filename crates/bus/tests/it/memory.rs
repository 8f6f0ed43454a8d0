//! The shared behaviour suite against the in-process bus.

use crate::suite::Backend;

all_behaviour_tests!(Backend::Memory);
