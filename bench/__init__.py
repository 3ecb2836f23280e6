"""``make bench``: dialerd's performance, measured as ratios and counts against baselines in the same run.

Every load loop is bounded in count and time and only talks to loopback (the local Asterisk and daemons
this package starts). ``python -m bench`` runs every section, prints a table and writes
``docs/benchmarks.md``.
"""
