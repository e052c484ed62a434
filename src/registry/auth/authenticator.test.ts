import { parseBasic } from './authenticator.ts';

const basic = (text: string) => `Basic ${Buffer.from(text).toString('base64')}`;

describe('parseBasic', () => {
  it('reads username and password; the password may hold colons', () => {
    expect(parseBasic(basic('team-b:a:b'))).toEqual({ username: 'team-b', password: 'a:b' });
    expect(parseBasic(`basic  ${Buffer.from('u:').toString('base64')}`)).toEqual({
      username: 'u',
      password: '',
    });
    expect(parseBasic(undefined)).toBeUndefined();
  });

  it.each([
    ['no colon', basic('team-b')],
    ['bad base64', 'Basic !!!not-base64!!!'],
    ['truncated base64', 'Basic dGVhbS1iOnB'],
    ['no credentials', 'Basic'],
    ['another scheme', 'Bearer abc'],
  ])('calls %s malformed', (_what, header) => {
    expect(parseBasic(header)).toBe('malformed');
  });
});
