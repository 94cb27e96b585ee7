"""Local LLM weights and runtimes: packaged models, their one-time conversion, a local OpenAI-style server."""
