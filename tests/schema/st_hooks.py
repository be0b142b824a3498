"""Schemathesis hooks for Parley: path ids drawn at random hit nothing, so half of the generated
cases (chosen from the drawn value, so a seed replays the same run) get the ids of a real
conversation, message and user of the signed-in caller instead (read from the environment the
test sets), to reach past the 404s into the handlers."""

import os

import schemathesis

REAL = {
    "id": os.environ.get("PARLEY_ST_CONVERSATION"),
    "messageId": os.environ.get("PARLEY_ST_MESSAGE"),
    "userId": os.environ.get("PARLEY_ST_USER"),
}


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    if path_parameters:
        for name, value in REAL.items():
            drawn = path_parameters.get(name)
            if value and drawn is not None and sum(map(ord, str(drawn))) % 2 == 0:
                path_parameters[name] = value
    return path_parameters
