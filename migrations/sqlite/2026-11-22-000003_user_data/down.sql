DROP TABLE api_keys;
DROP TABLE saved_items;
DROP TABLE user_preferences;
