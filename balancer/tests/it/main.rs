//! Integration tests: real sockets on 127.0.0.1 port 0, fake backends from `balancer::testing`.
