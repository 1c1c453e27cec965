"""CitizenLab test-list import into the citizenlab table."""
