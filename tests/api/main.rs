//! Black-box tests of the composed server over HTTP.

mod admin;
mod analytics;
mod auth;
mod bad_input;
mod business;
mod catalog;
mod credits;
mod errors;
mod gateway;
mod health;
mod identity;
mod limits;
mod me;
mod openapi;
mod operations;
mod password;
mod payment_scenarios;
mod payments;
mod products;
mod quotas;
mod rewards;
mod sessions;
mod stripe_api;
mod task_scenarios;
mod tasks;
mod webhooks;
