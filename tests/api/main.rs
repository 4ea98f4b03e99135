//! Black-box tests of the composed server over HTTP.

mod health;
