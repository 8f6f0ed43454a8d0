mod fixtures;
mod shape;
mod support;
