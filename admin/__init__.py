"""The Streamlit admin console (entry point: admin/app.py; started by `fakewatch admin`)."""
