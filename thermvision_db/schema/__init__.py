"""The corpus's facts and schemas: member table, vocabularies, features, label formats, splits, the generated corpus layout and identity record, the row builder."""
