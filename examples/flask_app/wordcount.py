"""A Flask app that counts the words of a text in the background, with minique.

``POST /count`` enqueues a task and answers at once with its id; ``GET
/result/<id>`` shows where it is and, once done, its result. See README.md
for the commands.
"""

from __future__ import annotations

import os
import time
from collections import Counter

from flask import Flask, abort, current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from minique.contrib.flask import FlaskMinique

from minique import TaskError

# Declared before any app exists; create_app() gives it its database.
mq = FlaskMinique()


@mq.task(retries=2)
def count_words(text: str) -> dict[str, int]:
    """The five most common words of ``text``, without the app's STOP_WORDS."""
    # Tasks run inside the app context: current_app and its config work here.
    time.sleep(current_app.config["SLOW_DOWN"])  # stands for real work
    stop_words = set(current_app.config["STOP_WORDS"])
    words = (word.strip(".,;:!?\"'()").lower() for word in text.split())
    return dict(Counter(w for w in words if w and w not in stop_words).most_common(5))


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        # The instance folder is Flask's place for files such as SQLite databases.
        MINIQUE_DATABASE=os.path.join(app.instance_path, "minique.db"),
        STOP_WORDS=["a", "an", "and", "in", "is", "it", "of", "the", "to"],
        SLOW_DOWN=1.0,
    )
    # FLASK_MINIQUE_IMMEDIATE=true in the environment sets MINIQUE_IMMEDIATE, etc.
    app.config.from_prefixed_env()
    os.makedirs(app.instance_path, exist_ok=True)
    mq.init_app(app)

    @app.post("/count")
    def start_count() -> ResponseReturnValue:
        result = count_words(request.get_data(as_text=True))
        return jsonify(id=result.id, url=url_for("show_result", id=result.id)), 202

    @app.get("/result/<id>")
    def show_result(id: str) -> ResponseReturnValue:
        result = mq.result(id)
        try:
            body = {"id": id, "status": result.status, "words": result.get(blocking=False)}
        except LookupError:
            abort(404)
        except TaskError as exc:
            body = {"id": id, "status": "failed", "error": f"{exc.error_type}: {exc.message}"}
        return jsonify(body)

    return app
