//! The ticketrush Layer-7 HTTP load balancer.
