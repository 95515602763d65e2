"""The component runtime: what turns a user's function into a fabric process.

``component.py`` gives the function its context (ports by channel name, parameters, the stop
signal), ``resolver.py`` keeps each port's endpoints equal to what the name service lists for
its channel, ``registry.py`` says what channels and processes are called there,
``registration.py`` holds a process's own registration, and ``runner.py`` drains every port and
serves the control socket when the process is asked to stop. Nothing is imported here.
"""
