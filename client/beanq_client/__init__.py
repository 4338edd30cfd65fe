"""beanq_client: a client for beanstalkd-protocol servers."""
