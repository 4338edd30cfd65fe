"""beanq: a beanstalkd-compatible work-queue daemon."""
