"""Hardware access for the analyzer: stage, camera and the simulated analyzer.

Nothing in this package imports ``agent``, and nothing touches hardware at import
time: heavy or optional imports (picamera2) live inside the backend that needs them.
"""
