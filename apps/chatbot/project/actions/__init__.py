"""Custom actions of the shop assistant (run by the rasa_sdk action server in .venv-chatbot)."""
