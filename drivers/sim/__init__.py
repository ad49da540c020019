"""The simulated analyzer: a virtual GRBL controller, a virtual slide and a virtual camera."""
