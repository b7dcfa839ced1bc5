"""The persona chat server: an OpenAI-compatible API for the 16 personas, and a web chat page.

    python -m serve --demo                    # the model `make demo` trained, on the CPU
    make serve [CONFIG=...]                   # the checkpoint a training config made
    make serve-vllm                           # vLLM serving base + adapter; then python -m serve --upstream URL

Layout: `protocol` (the OpenAI wire format, pure), `local` (the in-process model: a queue and one
worker thread), `upstream` (forwarding to vLLM or any OpenAI-compatible server), `app` (the FastAPI
routes, the key check, the page), `server` (checkpoint → personas → backend → uvicorn), `vllm` (the
`vllm serve` command for a config), `static/` (the page: plain HTML, CSS and JS, no build step).
"""
