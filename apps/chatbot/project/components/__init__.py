"""Custom NLU components of the shop assistant (run inside .venv-chatbot by Rasa)."""
