"""The demo (`adapterkit demo`, run.py) and what it stands on, which the tests share: small models trained
on shipped CounterFact facts (factmodels.py; the subject-recall recipe in subject_recall.py; the facts
and the training pieces both recipes use in facts.py) and their data (data/)."""
