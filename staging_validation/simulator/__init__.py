"""The built-in staging service (`staging-validation simulate`): the default target of demos and tests.

- `profiles.py` + `profiles.yaml`: fault profiles, a healthy baseline of knobs plus windows of campaign time
- `engine.py`: the service's behaviour (chat pipeline, identity spine, organic users, fault schedule)
- `telemetry_log.py`: the pino log writer, which also counts every line it writes (the ground truth)
- `app.py`: the HTTP surface in the documented or the alternate dialect, plus `/_sim/stats`, `/_sim/campaign`
- `server.py`: socket, uvicorn, outages that really refuse connections; `cli.py`: the `simulate` command
- `process.py`: start the simulator as a child process and wait until it answers (rehearsal and tests)
"""
