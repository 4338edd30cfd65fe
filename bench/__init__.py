"""Benchmark harness comparing beanq with beanstalkd on the same machine in the same run.

Run it with ``make bench`` or ``python -m bench --help``. It talks to both servers over
loopback only and never imports beanq itself, so it measures the program a user would run.
"""
