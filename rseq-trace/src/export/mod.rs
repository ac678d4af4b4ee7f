//! Prometheus: the scrape-time collector and the HTTP server of `/metrics`.

pub mod collector;
pub mod scrape;
pub mod serve;
