"""Storage plugins for Lethe and the contract they implement (:mod:`plugins.base`)."""
