"""A clinic's day compressed into minutes, through `nobat serve` and the fake PBX, with faults.

Run: python -m bench.clinic_day [--minutes 10] [--calls 3000] [--consultations 150]
     [--backend sqlite|postgresql|both] [--seed 1405] [--out bench-report] [--practices 1]

A Saturday (the week's first and busiest day) runs in `--minutes` of wall time. Its shape
follows the field facts in DESIGN.md: inbound calls peak 10:00-12:00, and the next day's
slots open at 00:00, so callers rush in during the first minutes after midnight (hour 0's
arrivals decay exponentially from 00:00 with a 10-minute time constant: about two thirds of
them fall in 00:00-00:10); consultations come due through the afternoon, peaking
16:00-18:00 (16:00 is the most-booked hour). The volume is a chosen load, not a field
figure: DESIGN.md gives no calls or consultations per clinic and day (its 21,300
consultation hours a year are the whole platform's), so 3,000 calls and 150 consultations
stand for a busy clinic's Saturday; both are flags.

Callers book, move and cancel their bookings, ask for a doctor's hours and the address, hang
up at random steps and press wrong keys, each over a real FastAGI socket; consultations ring
fake phones that answer, talk, stay silent or are busy, over AMI. Faults hit the run on
schedule: the AMI link dropped, Asterisk restarted, nobat killed (SIGKILL) and started
again, the database locked (SQLite) or restarted (PostgreSQL), and a burst of malformed
FastAGI clients. With `--practices` N the line serves N practices from a clinic folder (the
demo's and N-1 copies with their own key, names, number, card codes and doctors' phones):
each caller dials one practice's number, and changes a booking on the number they booked it
on; the consultations are spread over every practice's doctors.

At the end it checks the invariants and prints each with its count, then writes a Markdown
report and a PNG chart into `--out`. The figures are labelled for what they are: offered
load is calls started per wall second (what the script sent, not what nobat could take);
per-command turnaround is nobat's time from a reply leaving the fake PBX to its next
command; the booking action is that turnaround for the one command after the caller's
confirming key (nobat writes the booking, then sends the code or "slot taken"); a whole
booking call is connect to hang-up in wall time, with the caller's prompts played in the
fake PBX's virtual time. The test suite runs a short version (tests/test_clinic_day.py).

`callers` shapes the day and scripts each caller, `day` plays it against nobat and injects
the faults, `invariants` holds the rules, `report` the figures; `records` is what they pass
between them.
"""
