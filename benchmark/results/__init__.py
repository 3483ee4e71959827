"""From finished searches to answers: refit on all training videos, test once, compare every pair."""
