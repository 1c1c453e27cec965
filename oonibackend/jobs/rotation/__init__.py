"""Test-helper rotation (`oonibackend rotate`): keep a few fresh web-connectivity test helpers.

* provider.py      the small cloud interface (droplets, DNS records) and its data types
* digitalocean.py  that interface over DigitalOcean's API v2
* state.py         the test_helper_instances table (CollapsingMergeTree rows)
* journal.py       the droplet a run is about to create, recorded before asking for it
* rotate.py        what a run should do (pure) and doing it
* cli.py           the command
"""
