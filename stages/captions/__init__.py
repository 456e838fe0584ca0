"""The captions stage (CAPTIONING): JoyCaption for images, Gemini for videos, caption files."""
