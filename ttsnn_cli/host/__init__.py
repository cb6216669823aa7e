"""The machine ttsnn runs on, seen as a place strangers may share: folders and imports no one else can swap.

Owns: private folders for the compiled neuron's build and the error logs (`private`), the one rule
for putting the user's current folder on the import path (`imports`), and how much memory the
machine gives ttsnn, against which every size from a file or option is checked (`memory`).
Everything that writes a temporary file outside an output's own folder, or imports by name, goes
through here.
May import: `errors` and the standard library only (it sits below everything else).
"""
