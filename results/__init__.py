"""The leaderboard: trial records, ranking (pure functions) and export."""
